#!/usr/bin/env node
// forge drives this as its solc: `--version` must end with a `Version: X` line, and
// `--standard-json` reads standard JSON on stdin and writes only standard JSON on stdout.
// forge inlines every source's content, so no import callback is needed.
'use strict';
const solc = require('solc');

const args = process.argv.slice(2);
if (args.includes('--version')) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}
if (!args.includes('--standard-json')) {
  process.stderr.write(`solc shim: only --version and --standard-json are supported (got: ${args.join(' ')})\n`);
  process.exit(2);
}
const chunks = [];
process.stdin.on('data', (chunk) => chunks.push(chunk));
process.stdin.on('end', () => {
  process.stdout.write(solc.compile(Buffer.concat(chunks).toString('utf8')));
});
