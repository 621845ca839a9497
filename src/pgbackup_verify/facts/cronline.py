"""A cron command read the way cron and the shell read it: what the line finally runs.

Cron first cuts the command at the first unescaped `%` (the rest becomes the job's stdin, and `\\%`
becomes `%`); the shell then splits what is left into simple commands at `;`, `&&`, `||`, `|`, `&`,
drops redirections, and follows `cd DIR` for a later relative path. Wrappers (`flock`, `timeout`,
`nice`, `env`, `sudo`, `bash -c`, `runitor` ...) are peeled off with their own options, so the
script a wrapper runs is what gets checked, never its lock file or its duration.

Pure text work: no host access. Nothing here runs anything.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pgbackup_verify.facts import cronguard

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_OPS = ("&&", "||", ";;", "|&", ";", "&", "|", "(", ")", "\n")
_REDIRS = ("&>>", "&>", ">>", ">|", ">&", "<<<", "<<-", "<<", "<&", "<>", ">", "<")
_RESERVED = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time"}
_MAX_DEPTH = 8  # `bash -c "sh -c '...'"` nesting we follow before giving up


@dataclass(frozen=True)
class Tok:
    kind: str  # "word", "op" or "redir"
    value: str  # a word with its quotes removed; the operator itself otherwise
    dynamic: bool = False  # the word holds an expansion ($VAR, $(...), `...`): its value is not final


@dataclass(frozen=True)
class Run:
    """One program a cron line finally runs (after every wrapper is peeled off)."""

    path: str  # resolved against `cd` and HOME when it has a '/', else the bare command name
    written: str  # the word as the line has it
    direct: bool  # executed itself (needs an execute bit); False: a script handed to an interpreter
    user: str  # who runs it: "" is the cron entry's own user, else a `sudo -u`/`su`/`runuser` user
    via: tuple[str, ...] = ()  # the wrappers around it, outermost first
    guarded: bool = False  # runs only behind a test of its own file (`[ -x P ] && P`): absent, it is a no-op

    @property
    def is_path(self) -> bool:
        return "/" in self.path


@dataclass(frozen=True)
class Percent:
    """Cron's `%` handling of one command."""

    command: str  # what cron hands to the shell
    stdin: str | None  # what follows the first unescaped %, None when there is none
    column: int  # 1-based column of the first unescaped % in the command, 0 when none
    escaped: str  # the command with every unescaped % written as \\%


def cron_percent(command: str) -> Percent:
    """Cut a command the way cron does: the first unescaped % ends it, `\\%` is a literal %."""
    out: list[str] = []
    fixed: list[str] = []
    escaped = False
    cut = -1
    for i, ch in enumerate(command):
        if escaped:
            escaped = False
            if ch == "%":
                if cut < 0:
                    out[-1] = "%"  # cron drops the backslash before an escaped %
                fixed.append(ch)
                continue
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            if cut < 0:
                cut = i
            fixed.append("\\%")
            continue
        if cut < 0:
            out.append(ch)
        fixed.append(ch)
    if cut < 0:
        return Percent("".join(out), None, 0, command)
    return Percent("".join(out), command[cut + 1:].replace("%", "\n"), cut + 1, "".join(fixed))


class ShellSyntaxError(ValueError):
    """The command is not valid shell (e.g. an unterminated quote); str() says where."""


def _skip_subst(text: str, i: int) -> int:
    """Index after the `$(...)`/`${...}`/`$((...))` starting at text[i] == '$' (quotes inside honoured)."""
    close = ")" if text[i + 1] == "(" else "}"
    opening = text[i + 1]
    depth, j = 0, i + 1
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "'" and close == ")":
            end = text.find("'", j + 1)
            if end < 0:
                break
            j = end + 1
            continue
        if c == "\"":
            j = _skip_double(text, j) + 1
            continue
        if c == opening:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise ShellSyntaxError(f"unterminated '${opening}' at column {i + 1}")


def _skip_double(text: str, i: int) -> int:
    """Index of the `"` closing the one at text[i]."""
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "\"":
            return j
        if c == "$" and j + 1 < len(text) and text[j + 1] in "({":
            j = _skip_subst(text, j)
            continue
        if c == "`":
            end = _skip_backtick(text, j)
            j = end + 1
            continue
        j += 1
    raise ShellSyntaxError(f"unterminated double quote at column {i + 1}")


def _skip_backtick(text: str, i: int) -> int:
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == "`":
            return j
        j += 1
    raise ShellSyntaxError(f"unterminated backquote at column {i + 1}")


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks: list[Tok] = []
        self.word: list[str] = []
        self.started = self.dynamic = False

    def end_word(self) -> None:
        if self.started:
            self.toks.append(Tok("word", "".join(self.word), self.dynamic))
        self.word.clear()
        self.started = self.dynamic = False

    def add(self, part: str, dynamic: bool = False) -> None:
        self.word.append(part)
        self.started = True
        self.dynamic = self.dynamic or dynamic

    def step(self, i: int) -> int:
        """Consume what starts at text[i]; return the index after it."""
        text, n = self.text, len(self.text)
        c = text[i]
        if c in " \t":
            self.end_word()
            return i + 1
        if c == "#" and not self.started:
            nl = text.find("\n", i)
            return n if nl < 0 else nl
        if c == "\\":
            if text.startswith("\n", i + 1):
                return i + 2  # line continuation
            self.add(text[i + 1:i + 2])
            return i + 2
        if c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError(f"unterminated single quote at column {i + 1}")
            self.add(text[i + 1:end])
            return end + 1
        if c == "\"":
            end = _skip_double(text, i)
            inner = text[i + 1:end]
            self.add(re.sub(r"\\([$`\"\\\n])", r"\1", inner), "$" in inner or "`" in inner)
            return end + 1
        if c == "$" and text[i + 1:i + 2] in ("(", "{"):
            end = _skip_subst(text, i)
            self.add(text[i:end], True)
            return end
        m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*|[0-9?#@*!$-])", text[i:]) if c == "$" else None
        if m:
            self.add(m.group(0), True)
            return i + len(m.group(0))
        if c == "`":
            end = _skip_backtick(text, i)
            self.add(text[i:end + 1], True)
            return end + 1
        if c in ";&|<>()\n":
            op = next((o for o in _BY_LENGTH if text.startswith(o, i)), c)
            if op in _REDIRS:
                # `2>` and `2>&1`: digits written right before the operator are its file descriptor.
                if self.started and not self.dynamic and "".join(self.word).isdigit():
                    self.word.clear()
                    self.started = False
                self.end_word()
                self.toks.append(Tok("redir", op))
            else:
                self.end_word()
                self.toks.append(Tok("op", op))
            return i + len(op)
        self.add(c)
        return i + 1


_BY_LENGTH = sorted(_OPS + _REDIRS, key=len, reverse=True)


def tokens(text: str, errors: list[str] | None = None) -> list[Tok]:
    """Shell tokens of a command: words (quotes removed), control operators and redirections.
    An unterminated quote or substitution raises ShellSyntaxError, or, with `errors`, is noted
    there and the rest of the text is taken as one last word (what a reader can still name)."""
    lx = _Lexer(text)
    i = 0
    while i < len(text):
        try:
            i = lx.step(i)
        except ShellSyntaxError as e:
            if errors is None:
                raise
            errors.append(str(e))
            lx.add(text[i:], True)
            break
    lx.end_word()
    return lx.toks


@dataclass
class _Simple:
    words: list[Tok] = field(default_factory=list)
    assigns: list[str] = field(default_factory=list)
    redirect_targets: list[str] = field(default_factory=list)
    sep_before: str = ""
    start: int = -1  # index of its first word (or assignment) among the tokens


def simple_commands(toks: list[Tok]) -> list[_Simple]:
    """Split tokens into simple commands; assignments and redirections set aside."""
    cmds = [_Simple()]
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.kind == "op":
            cmds.append(_Simple(sep_before=t.value))
        elif t.kind == "redir":
            if i + 1 < len(toks) and toks[i + 1].kind == "word":
                cmds[-1].redirect_targets.append(toks[i + 1].value)
                i += 1
        elif not cmds[-1].words and not t.dynamic and _NAME.match(t.value):
            cmds[-1].start = i if cmds[-1].start < 0 else cmds[-1].start
            cmds[-1].assigns.append(t.value)
        elif not cmds[-1].words and t.value in _RESERVED:
            pass  # `if`, `then`, `do`, `{` ... open a compound command; what follows is a command
        else:
            cmds[-1].start = i if cmds[-1].start < 0 else cmds[-1].start
            cmds[-1].words.append(t)
        i += 1
    return [c for c in cmds if c.words or c.sep_before in ("(", ")")]


@dataclass(frozen=True)
class _Ctx:
    cwd: str | None  # the shell's working directory when known
    home: str | None
    user: str = ""
    via: tuple[str, ...] = ()
    depth: int = 0
    guards: frozenset[str] = frozenset()  # files tested before this point runs (resolved paths)


@dataclass
class Parsed:
    """A cron command, read: what it runs, every word it mentions, and why it could not be read."""

    runs: list[Run] = field(default_factory=list)
    words: list[str] = field(default_factory=list)  # every word value, nested `-c` strings included
    error: str = ""


def _resolve(word: str, ctx: _Ctx) -> str:
    if word == "~" or word.startswith("~/"):
        return (ctx.home + word[1:]) if ctx.home else word
    for var in ("$HOME", "${HOME}"):
        if word.startswith(var) and ctx.home:
            return ctx.home + word[len(var):]
    if "/" not in word or word.startswith("/"):
        return posixpath.normpath(word) if word.startswith("/") else word
    return posixpath.normpath(posixpath.join(ctx.cwd, word)) if ctx.cwd else word


# --- wrappers: each takes the words after its name and says what it runs -----------------------
# A result is ("cmd", words, ctx), ("shell", command string, ctx), ("script", word, ctx) or None
# (the wrapper runs nothing we can name, e.g. `flock 9` or `python -m mod`).

_Result = tuple[str, object, _Ctx] | None


def _getopt(args: list[str], with_arg: str = "", long_with_arg: tuple[str, ...] = (),
            permute: bool = False) -> tuple[dict[str, str], list[str]]:
    """getopt as the wrappers use it: options (short clusters, long with = or a separate value) until
    `--` or, unless `permute`, the first operand. Unknown options are taken as flags."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i + 1:]
            break
        if a.startswith("--") and len(a) > 2:
            name, eq, val = a.partition("=")
            if not eq and name in long_with_arg and i + 1 < len(args):
                i += 1
                val = args[i]
            opts[name] = val
        elif a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                ch = a[j]
                if ch in with_arg:
                    val = a[j + 1:]
                    if not val and i + 1 < len(args):
                        i += 1
                        val = args[i]
                    opts["-" + ch] = val
                    break
                opts["-" + ch] = ""
                j += 1
        else:
            if not permute:
                rest += args[i:]
                break
            rest.append(a)
        i += 1
    return opts, rest


def _flock(args: list[str], ctx: _Ctx) -> _Result:
    _, rest = _getopt(args, "wE", ("--wait", "--timeout", "--conflict-exit-code"))
    if len(rest) < 2:
        return None  # `flock [opts] FD`: locks a descriptor, runs nothing
    if rest[1] in ("-c", "--command"):
        return ("shell", rest[2], ctx) if len(rest) > 2 else None
    return "cmd", rest[1:], ctx


def _timeout(args: list[str], ctx: _Ctx) -> _Result:
    _, rest = _getopt(args, "sk", ("--signal", "--kill-after"))
    return ("cmd", rest[1:], ctx) if len(rest) > 1 else None


def _plain(with_arg: str = "", long_with_arg: tuple[str, ...] = ()) -> Callable[[list[str], _Ctx], _Result]:
    def peel(args: list[str], ctx: _Ctx) -> _Result:
        _, rest = _getopt(args, with_arg, long_with_arg)
        return "cmd", rest, ctx
    return peel


def _ionice(args: list[str], ctx: _Ctx) -> _Result:
    opts, rest = _getopt(args, "cnpPu", ("--class", "--classdata", "--pid", "--pgid", "--uid"))
    if any(k in opts for k in ("-p", "-P", "-u", "--pid", "--pgid", "--uid")):
        return None  # changes running processes, runs nothing
    return "cmd", rest, ctx


def _env(args: list[str], ctx: _Ctx) -> _Result:
    opts, rest = _getopt(args, "uCS", ("--unset", "--chdir", "--split-string"))
    split = opts.get("-S", opts.get("--split-string"))
    if split is not None:
        rest = shlex.split(split) + rest
    chdir = opts.get("-C", opts.get("--chdir"))
    if chdir:
        ctx = replace(ctx, cwd=_resolve(chdir, ctx))
    while rest and (rest[0] == "-" or _NAME.match(rest[0])):
        rest = rest[1:]
    return "cmd", rest, ctx


def _sudo(args: list[str], ctx: _Ctx) -> _Result:
    opts, rest = _getopt(args, "ugCDhpRrtTU", ("--user", "--group", "--chdir", "--host", "--prompt", "--role",
                                               "--type", "--command-timeout", "--other-user", "--close-from",
                                               "--chroot"))
    if any(k in opts for k in ("-e", "--edit", "-l", "--list", "-v", "--validate", "-k", "-K")) and not rest:
        return None
    user = opts.get("-u", opts.get("--user", "root"))
    ctx = replace(ctx, user=user)
    chdir = opts.get("-D", opts.get("--chdir"))
    if chdir:
        ctx = replace(ctx, cwd=_resolve(chdir, ctx))
    while rest and _NAME.match(rest[0]):
        rest = rest[1:]
    return "cmd", rest, ctx


def _su(args: list[str], ctx: _Ctx) -> _Result:
    opts, rest = _getopt(args, "cCgGsw", ("--command", "--session-command", "--group", "--supp-group", "--shell",
                                          "--whitelist-environment"), permute=True)
    rest = [a for a in rest if a != "-"]
    command = opts.get("-c", opts.get("--command", opts.get("-C", opts.get("--session-command"))))
    if command is None:
        return None  # an interactive shell: nothing named
    return "shell", command, replace(ctx, user=rest[0] if rest else "root")


def _runuser(args: list[str], ctx: _Ctx) -> _Result:
    opts, rest = _getopt(args, "ugGcs", ("--user", "--group", "--supp-group", "--command", "--shell"))
    user = opts.get("-u", opts.get("--user"))
    if user is None:
        return _su(args, ctx)
    return "cmd", rest, replace(ctx, user=user)


def _shell(args: list[str], ctx: _Ctx) -> _Result:
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--" or a == "-":
            i += 1
            break
        if a in ("--rcfile", "--init-file"):
            i += 2
            continue
        if a.startswith("--"):
            i += 1
            continue
        if len(a) > 1 and a[0] in "-+":
            for ch in a[1:]:
                opts[ch] = ""
            if "o" in a[1:] or "O" in a[1:]:
                i += 1  # `-o pipefail`, `+O extglob`: the option name is the next word
            i += 1
            continue
        break
    rest = args[i:]
    if "c" in opts:
        return ("shell", rest[0], ctx) if rest else None
    if "s" in opts or not rest:
        return None  # commands from stdin
    return "script", rest[0], ctx


def _interpreter(inline: str) -> Callable[[list[str], _Ctx], _Result]:
    """python/perl/ruby/node: the first operand is a script, unless code comes inline (-c, -e, -m)."""
    def peel(args: list[str], ctx: _Ctx) -> _Result:
        for i, a in enumerate(args):
            if a == "--":
                return ("script", args[i + 1], ctx) if i + 1 < len(args) else None
            if a.startswith("-") and len(a) > 1:
                if any(ch in inline for ch in a[1:2]):
                    return None
                continue
            return "script", a, ctx
        return None
    return peel


def _runitor(args: list[str], ctx: _Ctx) -> _Result:
    # Go's flag package: -flag, --flag, -flag=value; a non-bool flag takes the next word.
    bools = {"no-start-ping", "no-output-in-ping", "no-run-id", "quiet", "silent", "version", "create", "help",
             "h"}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return "cmd", args[i + 1:], ctx
        if not a.startswith("-") or a == "-":
            return "cmd", args[i:], ctx
        name = a.lstrip("-")
        if "=" not in name and name not in bools:
            i += 1
        i += 1
    return None


def _command(args: list[str], ctx: _Ctx) -> _Result:
    opts, rest = _getopt(args)
    return None if "-v" in opts or "-V" in opts else ("cmd", rest, ctx)  # -v/-V only look a name up


def _after_dashdash(args: list[str], ctx: _Ctx) -> _Result:
    return ("cmd", args[args.index("--") + 1:], ctx) if "--" in args else None


def _cronitor(args: list[str], ctx: _Ctx) -> _Result:
    # `cronitor exec KEY "command args"`: the command is run through a shell.
    if "exec" not in args:
        return None
    rest = args[args.index("exec") + 2:]
    return ("shell", " ".join(rest), ctx) if rest else None


def _with_lock(with_arg: str = "") -> Callable[[list[str], _Ctx], _Result]:
    """`lckdo [opts] LOCK cmd`, `setlock [opts] LOCK cmd`: the first operand is the lock."""
    def peel(args: list[str], ctx: _Ctx) -> _Result:
        _, rest = _getopt(args, with_arg)
        return ("cmd", rest[1:], ctx) if len(rest) > 1 else None
    return peel


WRAPPERS: dict[str, Callable[[list[str], _Ctx], _Result]] = {
    "flock": _flock,
    "timeout": _timeout,
    "nice": _plain("n", ("--adjustment",)),
    "ionice": _ionice,
    "env": _env,
    "sudo": _sudo,
    "su": _su,
    "runuser": _runuser,
    "chronic": _plain(),
    "cronic": _plain(),
    "nohup": _plain(),
    "setsid": _plain(),
    "run-one": _plain(),
    "unbuffer": _plain(),
    "exec": _plain("a"),
    "command": _command,
    "time": _plain("of", ("--output", "--format")),
    "stdbuf": _plain("ioe", ("--input", "--output", "--error")),
    "systemd-cat": _plain("tp", ("--identifier", "--priority", "--stderr-priority", "--level-prefix")),
    "lckdo": _with_lock(),
    "setlock": _with_lock(),
    "runitor": _runitor,
    "sentry-cli": _after_dashdash,
    "cronitor": _cronitor,
    **{sh: _shell for sh in ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox-sh")},
    **{py: _interpreter("cm") for py in ("python", "python2", "python3")},
    **{p: _interpreter("eE") for p in ("perl", "ruby", "node", "nodejs")},
    "php": _interpreter("r"),
}


def _final(words: list[Tok], ctx: _Ctx, out: Parsed) -> None:
    """Peel wrappers off one simple command and record what it finally runs."""
    values = [w.value for w in words]
    first_dynamic = words[0].dynamic if words else False
    while values:
        name = posixpath.basename(values[0])
        if re.fullmatch(r"python\d+(\.\d+)?", name):
            name = "python3"
        peel = WRAPPERS.get(name)
        if peel is None:
            break
        via = (*ctx.via, name)
        res = peel(values[1:], replace(ctx, via=via))
        if res is None:
            return
        kind, what, ctx = res
        if kind == "shell":
            assert isinstance(what, str)
            _parse_into(what, replace(ctx, depth=ctx.depth + 1), out)
            return
        if kind == "script":
            assert isinstance(what, str)
            path = _resolve(what, ctx)
            out.runs.append(Run(path, what, False, ctx.user, ctx.via, path in ctx.guards))
            return
        assert isinstance(what, list)
        values = what
        first_dynamic = False
    if values:
        if first_dynamic and "/" not in values[0]:
            return  # `$CMD args`: nothing we can name
        path = _resolve(values[0], ctx)
        out.runs.append(Run(path, values[0], True, ctx.user, ctx.via, path in ctx.guards))


def _parse_into(command: str, ctx: _Ctx, out: Parsed) -> None:
    if ctx.depth > _MAX_DEPTH:
        return
    errors: list[str] = []
    toks = tokens(command, errors)
    cmds = simple_commands(toks)
    tested = cronguard.guards(toks, _RESERVED)
    out.error = out.error or (errors[0] if errors else "")
    stack: list[str | None] = []
    cwd = ctx.cwd
    for c in cmds:
        if c.sep_before == "(":
            stack.append(cwd)  # a subshell's `cd` ends with it
        elif c.sep_before == ")" and stack:
            cwd = stack.pop()
        if not c.words:
            continue
        out.words += [*c.assigns, *(w.value for w in c.words)]
        name = c.words[0].value
        if name in ("cd", "pushd") and not c.words[0].dynamic:
            args = [w for w in c.words[1:] if not w.value.startswith("-") or w.value == "-"]
            if not args:
                cwd = ctx.home
            elif args[0].dynamic or args[0].value == "-":
                cwd = None  # `cd $DIR`, `cd -`: unknown from here on
            else:
                cwd = _resolve(args[0].value if args[0].value.startswith("/") or "/" in args[0].value
                               else "./" + args[0].value, replace(ctx, cwd=cwd))
            continue
        here = replace(ctx, cwd=cwd)
        guards = ctx.guards | {_resolve(t.value, here) for t in tested.get(c.start, ())}
        _final(c.words, replace(here, guards=guards), out)


def parse_command(command: str, home: str | None = None, user: str = "") -> Parsed:
    """What a shell command (already cut at % by cron) runs, starting in `home` (cron's working dir)."""
    out = Parsed()
    _parse_into(command, _Ctx(cwd=home, home=home, user=user), out)
    return out
