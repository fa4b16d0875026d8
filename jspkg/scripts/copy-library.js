// prepack: ship the repository's built Lua library (lua/lgprune.lua) inside the package, as it is.
import { copyFileSync } from "node:fs";

copyFileSync(new URL("../../lua/lgprune.lua", import.meta.url), new URL("../lgprune.lua", import.meta.url));
