#!/bin/bash
# The single-user image's entrypoint, under tini: seed the user's home, then run the command
# (the spawner's `jupyterhub-singleuser`, the stack's anchor's `sleep`), as the same process.
#
# The image's build made, once for every user, the files listed (paths relative to the seed
# directory, one a line) in $seed.list: matplotlib's font list. A home that lacks one gets a copy;
# without it, a new home builds its own at its first `import matplotlib.pyplot` (~0.06 s natively,
# ~1 s under emulation: lab/images/NOTES.md). A file the user has stays theirs; a home that cannot take the copy
# (read-only, full, another uid's) is left as it is, and the server starts all the same.
# Nothing here forks while the home already has every file (one stat each, the shell's own).
set -u
seed=${CABLAB_HOME_SEED:-/opt/jupyter/share/cablab/home-seed}
if [ -r "$seed.list" ] && [ -n "${HOME:-}" ] && [ -d "$HOME" ] && [ -w "$HOME" ]; then
  while IFS= read -r rel; do
    case $rel in
      "" | /* | ../* | */../* | *..) continue ;;  # only paths inside the home
    esac
    target=$HOME/$rel
    [ -e "$target" ] || [ -L "$target" ] && continue
    part=$target.cablab-seed.$$
    if mkdir -p "${target%/*}" && cp "$seed/$rel" "$part" && mv -f "$part" "$target"; then
      :
    else
      rm -f "$part"
      echo "cablab-start: $HOME/$rel not seeded (the server starts without it)" >&2
    fi
  done <"$seed.list"
fi
exec "$@"
