#!/usr/bin/env bash
# Regenerate tests/data/ecs/ecs_fields.json: every ECS field with its type, whether it may be an array, and its
# allowed values, from Elastic's own generated field list (npm package @elastic/ecs, Apache-2.0). Needs npm + node.
set -euo pipefail
VERSION=${1:-9.4.0}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@elastic/ecs@$VERSION" >/dev/null && tar xzf ./*.tgz)
node -e '
const flat = require(process.argv[1] + "/package/build/commonjs/ecs_flat.js").EcsFlat;
const out = {ecs_version: process.argv[2], source: "npm @elastic/ecs@" + process.argv[2] + " (Apache-2.0)", fields: {}};
for (const [name, f] of Object.entries(flat).sort()) {
  out.fields[name] = {type: f.type, array: (f.normalize || []).includes("array"),
                      allowed: (f.allowed_values || []).map(v => v.name)};
}
process.stdout.write(JSON.stringify(out, null, 0) + "\n");
' "$work" "$VERSION" > tests/data/ecs/ecs_fields.json
cp "$work/package/LICENSE" tests/data/ecs/LICENSE
cp "$work/package/NOTICE.txt" tests/data/ecs/NOTICE.txt
echo "tests/data/ecs/ecs_fields.json: $(wc -c < tests/data/ecs/ecs_fields.json) bytes"
