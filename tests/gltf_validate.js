// Validate a glTF/GLB file with the Khronos glTF-Validator (npm package "gltf-validator").
// Usage: NODE_PATH=<dir containing node_modules/gltf-validator> node tests/gltf_validate.js file.glb
// Prints the validator's JSON report on stdout; exit code 2 if the validator itself failed.
"use strict";
const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

const file = process.argv[2];
validator
  .validateBytes(new Uint8Array(fs.readFileSync(file)), {
    uri: path.basename(file),
    maxIssues: 200,
    externalResourceFunction: () => Promise.reject(new Error("external resources are not allowed")),
  })
  .then((report) => process.stdout.write(JSON.stringify(report)))
  .catch((err) => {
    process.stderr.write(String(err) + "\n");
    process.exit(2);
  });
