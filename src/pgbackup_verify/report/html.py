"""The summary that opens the HTML report, in the style of the seed's monitor list: one line per
target and concern with its status, the one-line cause and the evidence; failing checks first,
each with its fix statement in a code block and a copy button. Self-contained: inline CSS and a
few lines of inline JS (the copy button, and lifting the summary above pytest-html's header).
"""

from __future__ import annotations

import html
import re
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgbackup_verify.report.summary import CheckResult, RunSummary

STATUS_RANK = {"FAILED": 0, "SKIPPED": 1, "OK": 2}

STYLE = """
#pgbv{color:#1d1d1d;font-size:14px;line-height:1.45;margin:0 0 18px;max-width:1100px}
#pgbv h2{font-size:22px;margin:6px 0 4px;padding:8px 12px;border-radius:4px;color:#fff}
#pgbv h2.pgbv-FAILED{background:#b71c1c}#pgbv h2.pgbv-OK{background:#2e7d32}
#pgbv .pgbv-sub{color:#444;margin:0 0 10px}
#pgbv .pgbv-note{background:#fff3e0;border-left:4px solid #e65100;padding:6px 10px;margin:6px 0}
#pgbv .pgbv-concern{border:1px solid #ddd;border-left:6px solid #9e9e9e;border-radius:3px;margin:8px 0;
  padding:6px 10px;background:#fff}
#pgbv .pgbv-concern.pgbv-FAILED{border-left-color:#c62828;background:#fff8f8}
#pgbv .pgbv-concern.pgbv-OK{border-left-color:#2e7d32}
#pgbv .pgbv-concern.pgbv-SKIPPED{border-left-color:#ef6c00}
#pgbv .pgbv-line{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
#pgbv .pgbv-badge{font-weight:bold;font-size:12px;padding:1px 7px;border-radius:3px;color:#fff;background:#757575}
#pgbv .pgbv-FAILED .pgbv-badge{background:#c62828}#pgbv .pgbv-OK .pgbv-badge{background:#2e7d32}
#pgbv .pgbv-SKIPPED .pgbv-badge{background:#ef6c00}
#pgbv .pgbv-what{font-weight:bold}#pgbv .pgbv-desc,#pgbv .pgbv-count{color:#555}
#pgbv .pgbv-ev-line{color:#333;font-size:13px}
#pgbv .pgbv-check{margin:8px 0 4px 12px}
#pgbv .pgbv-name{font-weight:bold}
#pgbv .pgbv-cause{margin:2px 0;white-space:pre-wrap}
#pgbv .pgbv-who{color:#333;font-size:13px;margin-top:4px}
#pgbv .pgbv-fix{display:flex;gap:6px;align-items:flex-start;margin:4px 0}
#pgbv .pgbv-fix code{display:block;flex:1;white-space:pre-wrap;word-break:break-word;background:#f4f4f4;
  border:1px solid #ccc;border-radius:3px;padding:5px 8px;font-size:13px;color:#000}
#pgbv button.pgbv-copy{font-size:12px;padding:4px 9px;cursor:pointer}
#pgbv table.pgbv-ev{border-collapse:collapse;font-size:12px;margin:2px 0 0}
#pgbv table.pgbv-ev th{text-align:left;color:#555;font-weight:normal;padding:1px 12px 1px 0;vertical-align:top}
#pgbv table.pgbv-ev td{padding:1px 0;color:#111;font-family:monospace}
#pgbv .pgbv-unchecked{color:#555;margin:6px 0}
#pgbv .pgbv-skip{margin:2px 0 0 12px;color:#333}
"""

# The Clipboard API needs a secure context; a report opened from a file or a mail attachment
# may not be one, so fall back to selecting the text and execCommand('copy').
SCRIPT = """
(function(){
 var box=document.getElementById('pgbv'),h=document.getElementById('environment-header');
 if(box&&h&&h.parentNode){h.parentNode.insertBefore(box,h);}
 document.querySelectorAll('#pgbv button.pgbv-copy').forEach(function(b){
  b.addEventListener('click',function(){
   var code=b.parentNode.querySelector('code'),text=code.textContent;
   function done(){b.textContent='copied';setTimeout(function(){b.textContent='copy';},1500);}
   function fallback(){var r=document.createRange();r.selectNodeContents(code);var s=window.getSelection();
    s.removeAllRanges();s.addRange(r);try{document.execCommand('copy');}catch(e){}done();}
   if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(text).then(done,fallback);}
   else{fallback();}
  });
 });
})();
"""


FIX = re.compile(r"(?:;|\n)[ \t]*fix(?: \(([^)\n]*)\))?: ")


def split_message(message: str) -> tuple[str, str, str]:
    """`<name>: FAILED (<measured> vs <limit>); fix (as <who>): <statement>` -> (cause, statement, who).

    The statement is the rest of the fix line; lines after it (listed objects) belong to the cause.
    """
    m = FIX.search(message)
    if m is None:
        return message.strip(), "", ""
    fix, _, after = message[m.end():].partition("\n")
    cause = message[:m.start()].rstrip() + ("\n" + after.rstrip() if after.strip() else "")
    return cause.strip(), fix.strip(), (m.group(1) or "").strip()


def _esc(s: object) -> str:
    return html.escape(str(s))


def _evidence_table(items: list[tuple[str, str]]) -> str:
    if not items:
        return ""
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in items)
    return f"<table class='pgbv-ev'>{rows}</table>"


def _check_block(r: CheckResult) -> str:
    cause, fix, who = split_message(r.detail or r.message)
    who_html = f"<div class='pgbv-who'>fix, as {_esc(who.removeprefix('as '))}:</div>" if who else ""
    fix_html = (f"{who_html}<div class='pgbv-fix'><code>{_esc(fix)}</code>"
                "<button type='button' class='pgbv-copy' title='copy the fix statement'>copy</button></div>"
                if fix else "")
    return (f"<div class='pgbv-check pgbv-{r.outcome}' data-nodeid='{_esc(r.nodeid)}'>"
            f"<div class='pgbv-name'>{_esc(r.outcome.upper())}: {_esc(r.label or r.name)}</div>"
            f"<div class='pgbv-cause'>{_esc(cause or r.outcome)}</div>{fix_html}"
            f"{_evidence_table(r.evidence)}</div>")


def _skip_line(r: CheckResult) -> str:
    return (f"<div class='pgbv-skip' data-nodeid='{_esc(r.nodeid)}'>skipped <b>{_esc(r.label or r.name)}</b>: "
            f"{_esc(r.message)}</div>")


def _concern_block(target: str, concern: str, desc: str, rs: list[CheckResult]) -> tuple[str, str]:
    bad = [r for r in rs if r.outcome in ("failed", "error")]
    skipped = [r for r in rs if r.outcome == "skipped"]
    status = "FAILED" if bad else ("SKIPPED" if len(skipped) == len(rs) else "OK")
    if bad:
        count = f"{len(bad)} of {len(rs)} checks failed"
    else:
        count = f"{len(rs) - len(skipped)} of {len(rs)} checks passed" + (f", {len(skipped)} skipped"
                                                                          if skipped else "")
    head = (f"<div class='pgbv-line'><span class='pgbv-badge'>{status}</span>"
            f"<span class='pgbv-what'>{_esc(target or '-')} &middot; {_esc(concern)}</span>"
            f"<span class='pgbv-count'>{count}</span><span class='pgbv-desc'>{_esc(desc)}</span></div>")
    if bad:
        body = "".join(_check_block(r) for r in bad) + "".join(_skip_line(r) for r in skipped)
    else:
        # A healthy concern stays one line, like the seed's "latest success OK size=64M".
        ev = "; ".join(f"{k}={v}" for r in rs if r.outcome == "passed" for k, v in r.evidence[:2])[:400]
        body = f"<div class='pgbv-ev-line'>{_esc(ev)}</div>" if ev else ""
        body += "".join(_skip_line(r) for r in skipped)
    return status, (f"<div class='pgbv-concern pgbv-{status}' data-target='{_esc(target)}' "
                    f"data-concern='{_esc(concern)}'>{head}{body}</div>")


def render(run: RunSummary, concerns: dict[str, str], targets: list[str] | None = None, extra: str = "") -> str:
    by_concern: dict[tuple[str, str], list[CheckResult]] = {}
    for r in run.ordered():
        by_concern.setdefault((r.target, r.concern), []).append(r)
    blocks = [(*_concern_block(t, c, concerns.get(c, ""), rs), t, c) for (t, c), rs in by_concern.items()]
    blocks.sort(key=lambda b: (STATUS_RANK[b[0]], b[2], b[3]))
    names = sorted({t for t, _ in by_concern} | set(targets or []))
    unchecked = ""
    for t in names:
        missing = [c for c in concerns if (t, c) not in by_concern]
        if missing:
            unchecked += (f"<p class='pgbv-unchecked'><b>{_esc(t or '-')}</b>: not checked in this run: "
                          f"{_esc(', '.join(missing))}</p>")
    c = run.counts()
    status = run.status()
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started))
    sub = (f"{c['failed'] + c['error']} failed, {c['passed']} passed, {c['skipped']} skipped on "
           f"{len(names)} target(s): {_esc(', '.join(names) or '-')} &middot; run {when}")
    notes = "".join(f"<p class='pgbv-note'>{_esc(n)}</p>" for n in run.notes)
    return (f"<section id='pgbv'><style>{STYLE}</style>"
            f"<h2 id='pgbv-summary' class='pgbv-{status}'>Backup health: {status}</h2>"
            f"<p class='pgbv-sub'>{sub}</p>{notes}"
            f"<div id='pgbv-concerns'>{''.join(b[1] for b in blocks)}</div>{unchecked}{extra}"
            f"<script>{SCRIPT}</script></section>")
