"""`lgprune serve`: the service core (`core`, no web framework), what every request passes
first (`guard`), and the HTTP routes (`routes`). Needs the serve extra (`pip install
'.[serve]'` in a checkout of lgprune)."""
