"""The inline stylesheet and scripts of the static site (:mod:`zoo.cards.pages`): no file, font or CDN is
loaded from anywhere, and the Content-Security-Policy of every page pins the scripts by their hashes."""

CSS = """
:root{--fg:#1d232b;--muted:#5b6673;--bg:#fff;--panel:#f5f7fa;--line:#dde3ea;--accent:#0b63c5;--code:#f1f3f6}
@media (prefers-color-scheme:dark){:root{--fg:#e4e8ee;--muted:#9aa6b4;--bg:#14181d;--panel:#1c2229;
--line:#2f3843;--accent:#6cb0ff;--code:#20272f}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg)}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header.top{padding:18px 28px;border-bottom:1px solid var(--line);background:var(--panel)}
header.top h1{margin:0;font-size:22px}header.top p{margin:4px 0 0;color:var(--muted)}
main{padding:20px 28px;max-width:1200px}
.controls{display:flex;flex-wrap:wrap;gap:12px;align-items:center;margin-bottom:14px}
.controls input[type=search]{flex:1 1 280px;padding:7px 10px;font-size:15px;border:1px solid var(--line);
border-radius:6px;background:var(--bg);color:var(--fg)}
.controls select{padding:6px 8px;font-size:15px;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}
#count{color:var(--muted)}
.table{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{border-bottom:1px solid var(--line);padding:6px 10px;text-align:left;vertical-align:top}
th{background:var(--panel);white-space:nowrap}
td.num,th.num,.right{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\ntable.kv{width:auto}table.kv th{background:none;color:var(--muted);font-weight:normal;padding-left:0}\ncode.sha{word-break:break-all}.center{text-align:center}
th button{all:unset;cursor:pointer;font-weight:600}th button:focus-visible{outline:2px solid var(--accent)}
th[aria-sort=ascending] button::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending] button::after{content:" \\25BC";font-size:10px}
tbody tr:hover{background:var(--panel)}
.tag{display:inline-block;padding:0 7px;border-radius:10px;background:var(--panel);border:1px solid var(--line);
font-size:12px;color:var(--muted)}
.none{color:var(--muted)}
code{font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--code);padding:1px 4px;border-radius:4px}
.code{position:relative;margin:12px 0}
.code pre{background:var(--code);padding:12px 14px;border-radius:6px;overflow-x:auto;margin:0}
.code pre code{padding:0;background:none}
.code .copy{position:absolute;top:6px;right:6px;font-size:12px;padding:3px 9px;border:1px solid var(--line);
border-radius:5px;background:var(--bg);color:var(--fg);cursor:pointer}
.code .lang{position:absolute;top:8px;right:70px;font-size:11px;color:var(--muted)}
.layout{display:grid;grid-template-columns:200px minmax(0,1fr);gap:28px}
nav.toc{position:sticky;top:12px;align-self:start;font-size:14px}
nav.toc ul{list-style:none;padding:0;margin:0}nav.toc li{margin:3px 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0 0 8px}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
h2{border-bottom:1px solid var(--line);padding-bottom:4px;margin-top:30px}
blockquote{margin:0;padding-left:14px;border-left:3px solid var(--line);color:var(--muted)}
footer{padding:16px 28px;color:var(--muted);font-size:13px;border-top:1px solid var(--line)}
@media (max-width:800px){.layout{grid-template-columns:1fr}nav.toc{position:static}}
"""

COPY_JS = """
(function(){
  function feedback(btn, ok){
    btn.textContent = ok ? "Copied" : "Press Ctrl+C";
    btn.title = ok ? "Copied to the clipboard" : "The code is selected: press Ctrl+C to copy it";
    setTimeout(function(){ btn.textContent = "Copy"; }, 1500);
  }
  function fallback(text, btn){
    var ta = document.createElement("textarea");
    ta.value = text; ta.setAttribute("readonly", ""); ta.style.position = "fixed"; ta.style.opacity = "0";
    document.body.appendChild(ta); ta.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(ta);
    if (!ok) {  // leave the code selected so that Ctrl+C copies it
      var range = document.createRange(); range.selectNodeContents(btn.parentNode.querySelector("code"));
      var sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
    }
    feedback(btn, ok);
  }
  document.querySelectorAll(".code .copy").forEach(function(btn){
    btn.addEventListener("click", function(){
      var text = btn.parentNode.querySelector("code").textContent;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function(){ feedback(btn, true); },
                                                 function(){ fallback(text, btn); });
      } else { fallback(text, btn); }
    });
  });
})();
"""

INDEX_JS = """
(function(){
  var data = JSON.parse(document.getElementById("zoo-index").textContent);
  var byName = {}; data.models.forEach(function(m){ byName[m.name] = m; });
  var tbody = document.querySelector("#models tbody");
  var rows = Array.prototype.slice.call(tbody.rows);
  var search = document.getElementById("search"), task = document.getElementById("task");
  var pretrained = document.getElementById("pretrained"), count = document.getElementById("count");
  var empty = document.getElementById("empty");
  var sortKey = null, sortDir = 1;
  function haystack(m){
    var p = m.paper, parts = [m.name, m.task, m.arch, m.license, p.title, p.authors, p.venue, String(p.year)];
    parts = parts.concat(m.tags);
    if (m.metric) parts.push(m.metric.metric, m.metric.dataset, m.metric.split);
    return parts.join(" ").toLowerCase();
  }
  var hay = {}; data.models.forEach(function(m){ hay[m.name] = haystack(m); });
  function value(m, key){
    if (key === "metric") return m.metric ? [m.metric.metric.toLowerCase(), m.metric.value] : null;
    if (key === "weights") return m.weights;
    if (key === "exportable") return m.exportable ? 1 : 0;
    return m[key];
  }
  function apply(){
    var terms = search.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var shown = 0;
    rows.forEach(function(tr){
      var m = byName[tr.dataset.name];
      var ok = (!task.value || m.task === task.value) && (!pretrained.checked || m.weights !== null) &&
               terms.every(function(t){ return hay[m.name].indexOf(t) >= 0; });
      tr.hidden = !ok; if (ok) shown++;
    });
    count.textContent = shown + " of " + rows.length + " models";
    empty.hidden = shown !== 0;
  }
  function compare(x, y){
    if (Array.isArray(x)) {
      for (var i = 0; i < x.length; i++) { var c = compare(x[i], y[i]); if (c) return c; }
      return 0;
    }
    return x < y ? -1 : x > y ? 1 : 0;
  }
  function sortBy(key){
    sortDir = sortKey === key ? -sortDir : 1; sortKey = key;
    var sorted = rows.slice().sort(function(a, b){
      var x = value(byName[a.dataset.name], key), y = value(byName[b.dataset.name], key);
      if (x === null || x === undefined) return (y === null || y === undefined) ? 0 : 1;
      if (y === null || y === undefined) return -1;
      return compare(x, y) * sortDir;
    });
    sorted.forEach(function(tr){ tbody.appendChild(tr); });
    document.querySelectorAll("#models th").forEach(function(th){
      if (th.dataset.key === key) th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
  }
  document.querySelectorAll("#models th button").forEach(function(btn){
    btn.addEventListener("click", function(){ sortBy(btn.parentNode.dataset.key); });
  });
  search.addEventListener("input", apply); task.addEventListener("change", apply);
  pretrained.addEventListener("change", apply);
  apply();
})();
"""
