#!/bin/sh
# Makes the bearer-token files deploy/compose.yaml mounts as secrets, unless they exist already:
#   trainer.tokens     one admin token (publish, roll back) and one train token (submit and follow jobs)
#   inferencer.tokens  one stream token for video clients
# Prints the tokens once, for the CLI: `poseloop --token-file FILE ...` or POSELOOP_TOKEN_FILE.
# The files are world-readable so the services' non-root user can read the bind-mounted secret; keep this
# folder private to you (chmod 700 deploy/secrets).
set -eu
cd "$(dirname "$0")"
umask 022
token() { openssl rand -hex 24; }
if [ ! -e trainer.tokens ]; then
  printf 'admin:%s\ntrain:%s\n' "$(token)" "$(token)" > trainer.tokens
  echo "wrote $(pwd)/trainer.tokens"
fi
if [ ! -e inferencer.tokens ]; then
  printf 'stream:%s\n' "$(token)" > inferencer.tokens
  echo "wrote $(pwd)/inferencer.tokens"
fi
