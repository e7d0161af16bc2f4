#!/usr/bin/env node
// Runs the compiled CLI; `make setup` builds dist/.
require('../dist/cli/index.js')
  .main(process.argv)
  .then((code) => process.exit(code ?? 0));
