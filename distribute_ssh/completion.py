"""Shell completion: ``dssh completion bash|zsh`` prints a script; the script asks
``dssh _complete WHAT`` for the names it cannot know (sweeps in the state file, hosts of
the inventory, jobs of a sweep, a command's options). Nothing here imports SSH."""

from __future__ import annotations

import argparse
import sys
from typing import Any

BASH = r'''# dssh completion for bash: eval "$(dssh completion bash)" (e.g. in ~/.bashrc)
_dssh() {
    local cur prev cmd i inv="" state="" sweep="" npos=0
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "$(dssh _complete commands 2>/dev/null)" -- "$cur"))
        return
    fi
    cmd="${COMP_WORDS[1]}"
    # what was typed so far: the inventory and state to ask, the sweep, how many arguments
    for ((i = 2; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -i|--inventory) inv="${COMP_WORDS[i+1]}"; ((i++)) ;;
            --state) state="${COMP_WORDS[i+1]}"; ((i++)) ;;
            --results|--log|--to|--include|--exclude|--name|--hosts|--host|--build|--attempt|--for|--max-failures) ((i++)) ;;
            -*) ;;
            *) [ -z "$sweep" ] && sweep="${COMP_WORDS[i]}"; ((npos++)) ;;
        esac
    done
    local ask=(dssh _complete)
    [ -n "$inv" ] && ask+=(-i "$inv")
    [ -n "$state" ] && ask+=(--state "$state")
    case "$prev" in
        -i|--inventory|--results|--log|--to|--state)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --hosts|--host|--build)
            COMPREPLY=($(compgen -W "$("${ask[@]}" hosts 2>/dev/null)" -- "$cur")); return ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$("${ask[@]}" options "$cmd" 2>/dev/null)" -- "$cur"))
        return
    fi
    case "$cmd" in
        run|convert)
            COMPREPLY=($(compgen -f -X '!*.@(yaml|yml)' -- "$cur") $(compgen -d -- "$cur")) ;;
        status|logs|cancel|pull|clean)
            if [ "$npos" -eq 0 ]; then
                COMPREPLY=($(compgen -W "$("${ask[@]}" sweeps 2>/dev/null)" -- "$cur")
                           $(compgen -f -X '!*.@(yaml|yml)' -- "$cur"))
            elif [ "$cmd" != status ]; then
                COMPREPLY=($(compgen -W "$("${ask[@]}" jobs "$sweep" 2>/dev/null)" -- "$cur"))
            fi ;;
        pause|resume)
            COMPREPLY=($(compgen -W "$("${ask[@]}" hosts 2>/dev/null)" -- "$cur")) ;;
        template) COMPREPLY=($(compgen -W "native python apptainer" -- "$cur")) ;;
        completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")) ;;
    esac
}
shopt -s extglob
complete -o filenames -F _dssh dssh
'''

ZSH = r'''# dssh completion for zsh: eval "$(dssh completion zsh)" (e.g. in ~/.zshrc)
autoload -U +X compinit && { (( $+functions[compdef] )) || compinit; }
autoload -U +X bashcompinit && bashcompinit
''' + BASH.split("\n", 1)[1]


def script(shell: str) -> str:
    return BASH if shell == "bash" else ZSH


def names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """What ``dssh _complete WHAT`` prints, one per line."""
    what = args.what
    if what == "commands":
        sub = _subparsers(parser)
        return sorted(n for n in sub.choices if not n.startswith("_")) + ["--help",
                                                                          "--version"]
    if what == "options":
        sub = _subparsers(parser)
        p = sub.choices.get(args.arg or "")
        if p is None:
            return []
        return sorted({o for a in p._actions for o in a.option_strings})
    if what == "hosts":
        from .model.inventory import load_inventory

        inv = load_inventory(args.inventory)
        return sorted(set(inv.hosts) | set(getattr(inv, "groups", {}) or {}))
    from .state import State, default_state_path

    path = args.state or default_state_path()
    try:
        state = State(path, readonly=True)
    except Exception:  # no state file yet: nothing to offer
        return []
    try:
        if what == "sweeps":
            rows = state.sweeps()
            return sorted({r["name"] for r in rows} | {f"{r['namespace']}/{r['name']}"
                                                      for r in rows})
        if what == "jobs" and args.arg:
            from .cli import _find_sweep

            try:
                row = _find_sweep(state, args.arg)
            except Exception:
                return []
            cur = state.db.cursor()
            cur.row_factory = None
            return [n for (n,) in cur.execute(
                "SELECT name FROM jobs WHERE sweep_id=? ORDER BY seq", (row["id"],))]
        return []
    finally:
        state.close()


def _subparsers(parser: argparse.ArgumentParser) -> Any:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a
    raise RuntimeError("no sub-commands")


def main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        out = names(parser, args)
    except Exception:  # completion never prints errors into the user's command line
        return 0
    sys.stdout.write("".join(f"{n}\n" for n in out))
    return 0
