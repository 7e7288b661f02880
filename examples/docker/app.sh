#!/bin/sh
# Stand-in application: shows which secrets it received (names only).
set -eu
echo "app: started with DATABASE_URL set: ${DATABASE_URL:+yes}"
exec sleep infinity
