#!/usr/bin/env bash
# Re-create docs/img/eventfleet-up.{svg,png}: a real capture of `eventfleet up` running.
# Starts `eventfleet up` in a private tmux server (160x50), lets it run, kills a worker (k)
# and adds one (a), captures the pane with its colours, renders it to SVG with rich and to
# PNG with rsvg-convert (Debian: apt-get install librsvg2-bin), then quits with q.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=docs/img/eventfleet-up
sock="eventfleet-shot-$$"
conf=$(mktemp)
frame=$(mktemp)
trap 'tmux -L "$sock" kill-server 2>/dev/null || true; rm -f "$conf" "$frame"' EXIT
printf 'set -g default-size 160x50\nset -g remain-on-exit on\n' >"$conf"
t() { tmux -L "$sock" -f "$conf" "$@"; }

t new-session -d -s shot -x 160 -y 50 "env -u COLUMNS -u LINES .venv/bin/eventfleet up --workers 3 --rate 600"
sleep 10
t send-keys -t shot k
sleep 5
t send-keys -t shot a
sleep 8
t capture-pane -e -p -t shot >"$frame"
t send-keys -t shot q
for _ in $(seq 120); do
  [ "$(t display-message -p -t shot '#{pane_dead}')" = 1 ] && break
  sleep 0.5
done

.venv/bin/python - "$frame" "$out.svg" <<'PY'
import io
import sys

from rich.console import Console
from rich.text import Text

frame, svg = sys.argv[1], sys.argv[2]
console = Console(record=True, width=160, file=io.StringIO(), force_terminal=True,
                  color_system="truecolor")
for line in open(frame, encoding="utf-8").read().rstrip("\n").split("\n"):
    console.print(Text.from_ansi(line), no_wrap=True, overflow="crop")
console.save_svg(svg, title="eventfleet up")
PY
rsvg-convert --zoom 1.25 "$out.svg" -o "$out.png"
echo "wrote $out.svg and $out.png"
