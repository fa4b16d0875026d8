// lgprune for Node.js: keep the newest N LangGraph checkpoints per thread in Redis, pruned
// inside Redis by the lgprune Functions library (the very file the Python package ships).
export { install, prune, pruneMany, sweep } from "./operations.js";
export { withAutoPrune } from "./autoprune.js";
export {
  ERROR_CLASSES,
  BadDataError,
  IndexMissingError,
  InvalidArgumentError,
  LgpruneError,
  LibraryInstallError,
  LibraryVersionError,
  MixedStoreError,
  ModulesMissingError,
  NoPermissionError,
  NoProgressError,
  PartialSearchError,
  ReadOnlyServerError,
} from "./errors.js";
