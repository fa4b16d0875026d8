"""`lgprune serve`: the service core (`core`, no web framework), what every request passes
first (`guard`), and the HTTP routes (`routes`). Needs `pip install 'lgprune[serve]'`."""
