"""The HTML page at `/`. Bottle's SimpleTemplate escapes every {{value}}, so notes are inert."""

from __future__ import annotations

from bottle import SimpleTemplate

from webstack_app.sessions import MAX_NOTE_LENGTH, MAX_NOTES, SessionData

_INDEX = SimpleTemplate(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>webstack: {{served_by}}</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  .served-by { font-size: 1.6rem; font-weight: bold; }
  .error { color: #a00; }
  li { overflow-wrap: anywhere; }
</style>
</head>
<body>
<h1>webstack sample app</h1>
<p>Served by <span class="served-by" id="served-by">{{served_by}}</span></p>
<p>Visits in this session: <strong id="visits">{{visits}}</strong>
  (the session lives {{ttl}} s after its last use, on whichever app machine serves you)</p>
<h2>Notes ({{len(notes)}} of {{max_notes}})</h2>
% if error:
<p class="error" id="error">{{error}}</p>
% end
% if notes:
<ol id="notes">
% for note in notes:
  <li>{{note}}</li>
% end
</ol>
% else:
<p id="notes-empty">No notes yet.</p>
% end
<form method="post" action="/notes">
  <label for="note">Add a note</label>
  <input id="note" name="note" maxlength="{{max_length}}" required autofocus>
  <button type="submit">Add</button>
</form>
<p><small>JSON: <a href="/api/session">/api/session</a></small></p>
</body>
</html>
"""
)


def render_index(served_by: str, data: SessionData, ttl: int, error: str = "") -> str:
    return _INDEX.render(
        served_by=served_by,
        visits=data.visits,
        notes=data.notes,
        ttl=ttl,
        error=error,
        max_notes=MAX_NOTES,
        max_length=MAX_NOTE_LENGTH,
    )
