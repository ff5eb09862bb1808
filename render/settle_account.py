"""Moving a standalone server's streams into the account its config says they belong to, while it is stopped.

Turning auth on moves the streams from the global account `$G` to `STREAMS` (stack/users.py, "Accounts"), and
turning it off moves them back. `$G` cannot export (nats-server server/opts.go: "$G" is a reserved account that
cannot be configured), so the streams have to move. A standalone server keeps each account's streams in
`<store_dir>/jetstream/<account>/streams/<stream>/` and loads, at start, the folders of the accounts with
JetStream (measured on 2.15.1: a stream folder moved between account folders comes back with every message,
sequence, consumer and ack floor; tests/stack/test_accounts.py). A reload does not move them: it gives `STREAMS`
an empty JetStream and leaves the streams in `$G` until the next restart, so the account is also part of the
restart checksum (render/nats_conf.py) and the pod restarts when it changes.

One script does the move, in both places it is needed:
- the nats pod's init container `settle-account` (natsio/nats-box: Alpine, busybox sh, mv, mkdir, rmdir;
  nats-io/nats-box Dockerfile `FROM alpine`), before nats-server starts on the volume;
- `streams/local/server.py`, before a local standalone server starts on its folder.
Only a standalone server: in a cluster the meta layer records each stream's account, so a folder move would be
undone or orphaned. There the streams change account by the grow's snapshot and restore (README).

Each stream folder is moved with one rename, so a crash leaves every stream whole in one account or the other,
and a rerun goes on. A stream already in the target account under the same name is never overwritten: the
script names both, changes nothing more, and fails, so nats-server does not start with half the data in view.
"""
from __future__ import annotations

# POSIX sh, busybox's mv, mkdir and rmdir. Environment: JETSTREAM_DIR (<store_dir>/jetstream), ACCOUNT.
SETTLE_SCRIPT = r"""set -u
to="$ACCOUNT"
case "$to" in
  '$G') from=STREAMS ;;
  *) from='$G' ;;
esac
src="$JETSTREAM_DIR/$from/streams"
dst="$JETSTREAM_DIR/$to/streams"
if [ ! -d "$src" ]; then
  echo "settle-account: the streams are in account $to already"
  exit 0
fi
if [ ! -e "$JETSTREAM_DIR/$to" ]; then
  mv "$JETSTREAM_DIR/$from" "$JETSTREAM_DIR/$to" || exit 1
  echo "settle-account: moved every stream from account $from to $to"
  exit 0
fi
mkdir -p "$dst" || exit 1
clash=""
for stream in "$src"/*; do
  [ -e "$stream" ] || continue
  name="${stream##*/}"
  if [ -e "$dst/$name" ]; then
    clash="$clash $name"
    continue
  fi
  mv "$stream" "$dst/$name" || exit 1
  echo "settle-account: moved stream $name from account $from to $to"
done
if [ -n "$clash" ]; then
  echo "settle-account: stream(s)$clash exist in both account $from and account $to; nothing of theirs was moved." >&2
  echo "Keep the copy you want: back up the other (nats stream backup, with the server on the old config) and" >&2
  echo "remove its folder under $JETSTREAM_DIR; README, 'Users and permissions'." >&2
  exit 1
fi
rmdir "$src" 2>/dev/null
rmdir "$JETSTREAM_DIR/$from" 2>/dev/null
exit 0
"""

INIT_CONTAINER = "settle-account"
