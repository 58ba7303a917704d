#!/bin/sh
# Makes the secrets deploy/compose.yaml mounts, each unless it exists already:
#   trainer.tokens            one admin token (publish, roll back) and one train token (submit and follow jobs)
#   inferencer.tokens         one stream token for video clients
#   nats-trainer.password     the NATS password of the trainer's user, "trainer"
#   nats-inferencer.password  the NATS password of the inferencer's user, "inferencer"
#   nats-admin.password       the NATS password of "admin", for people with the `nats` CLI
# and, on every run, from the three password files:
#   nats-auth.conf            those passwords as the variables deploy/nats/nats.conf includes
# To rotate a secret, delete its file and run this again (deploy/README.md, "NATS credentials").
#
#   deploy/secrets/make-tokens.sh [DIR]     DIR: where to write, by default this script's folder
#
# The files are world-readable so the services' non-root user can read the bind-mounted secret; keep this
# folder private to you (chmod 700 deploy/secrets).
set -eu
dir=${1:-$(dirname "$0")}
mkdir -p "$dir"
cd "$dir"
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
# A letter first: Kubernetes hands nats-server these as environment variables, which it parses as config values,
# and there a hex string such as 7e01ab... is a malformed number that stops the server.
nats_password() { printf 'n%s\n' "$(token)"; }
for user in trainer inferencer admin; do
  if [ ! -e "nats-$user.password" ]; then
    nats_password > "nats-$user.password"
    echo "wrote $(pwd)/nats-$user.password"
  fi
done

# A password of your own is fine if it fits in a quoted NATS config string without escapes.
for user in trainer inferencer admin; do
  case "$(cat "nats-$user.password")" in
    '' | *[!A-Za-z0-9._~+/=-]*)
      echo "$(pwd)/nats-$user.password: use letters, digits and . _ ~ + / = - only (or delete it for a new one)" >&2
      exit 1 ;;
    [!A-Za-z]* | [Tt][Rr][Uu][Ee] | [Ff][Aa][Ll][Ss][Ee] | [Yy][Ee][Ss] | [Nn][Oo] | [Oo][Nn] | [Oo][Ff][Ff])
      echo "$(pwd)/nats-$user.password: start it with a letter, and not a word nats-server reads as true or false (or delete it for a new one)" >&2
      exit 1 ;;
  esac
done
password() { cat "nats-$1.password"; }
# Written in place (same inode), so that a running NATS reloads it on SIGHUP through its bind mount.
cat > nats-auth.conf <<CONF
# Written by deploy/secrets/make-tokens.sh from the nats-*.password files beside it; included by
# deploy/nats/nats.conf. A secret: never commit it.
NATS_TRAINER_PASSWORD: "$(password trainer)"
NATS_INFERENCER_PASSWORD: "$(password inferencer)"
NATS_ADMIN_PASSWORD: "$(password admin)"
CONF
echo "wrote $(pwd)/nats-auth.conf"
