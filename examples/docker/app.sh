#!/bin/sh
# Stand-in application: says which secrets it received, by name only (never a
# value), from its environment or as files (the *_FILE=<path> convention), then
# waits like a server would. Replace it with your program.
set -eu
if [ -n "${DATABASE_URL:-}" ]; then
  echo "app: DATABASE_URL is in my environment"
fi
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*_FILE\)=.*/\1/p'); do
  eval "path=\${$name:-}"
  if [ -r "$path" ]; then
    echo "app: $name points to a readable file ($path)"
  else
    echo "app: $name points to $path, which I cannot read"
  fi
done
exec sleep infinity
