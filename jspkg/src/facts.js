// Facts of the Lua library, read from the shipped file, never copied here: its version, error
// codes, reply fields, option names and limits (as the Python package's facts.py reads them).
import { readFileSync } from "node:fs";

const FILE = new URL("../lgprune.lua", import.meta.url);

let text;

/** The Lua library shipped inside this package (lgprune.lua, the repository's lua/lgprune.lua), read once. */
export function libraryFile() {
  if (text === undefined) {
    try {
      text = readFileSync(FILE, "utf8");
    } catch (error) {
      throw new Error(
        `this lgprune package has no lgprune.lua (${error.code}): in a checkout, run \`npm run prepack\` in jspkg`,
      );
    }
  }
  return text;
}

// The text after `local NAME = ` at the start of a line: to the line's end, or a whole `{ ... }` table.
function value(name) {
  const found = new RegExp(`^local ${name} = (\\{[\\s\\S]*?\\}|[^\\n]*)`, "m").exec(libraryFile());
  if (found === null) throw new Error(`the shipped Lua library defines no ${name}`);
  return found[1].replace(/--[^\n]*/g, "").trim();
}

const strings = (name) => [...value(name).matchAll(/'([^']*)'/g)].map((m) => m[1]);
const keys = (name) => [...value(name).matchAll(/(\w+)\s*=/g)].map((m) => m[1]);

let facts;

/** The library's facts: { version, minBudget, maxMany, errorCodes, countFields, sweepFields, options }. */
export function library() {
  facts ??= Object.freeze({
    version: strings("VERSION")[0],
    minBudget: Number(value("MIN_BUDGET")),
    maxMany: Number(value("MAX_MANY")), // thread ids per lgprune_many call
    errorCodes: strings("ERROR_CODES"), // "LGPRUNE <CODE> ..." error replies
    countFields: strings("COUNT_FIELDS"), // the counts of lgprune_thread and lgprune_many replies
    sweepFields: strings("SWEEP_FIELDS"), // the fields of an lgprune_sweep reply
    options: new Set([...keys("THREAD_OPTIONS"), ...keys("SWEEP_OPTIONS")]),
  });
  return facts;
}

/** An option name the library takes, checked against its option tables. */
export function option(name) {
  if (!library().options.has(name)) throw new Error(`the shipped Lua library takes no option ${name}`);
  return name;
}
