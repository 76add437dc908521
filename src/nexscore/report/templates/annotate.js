(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("annot-data").textContent);
  var items = DATA.items;
  var KEY = "nexscore-annotation-" + DATA.page_id;
  var marks = items.map(function (it) { return new Uint8Array(it.tokens.length); });
  var done = items.map(function () { return false; });
  var spansEls = [];
  var drag = null;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function render() {
    var root = document.getElementById("cards");
    items.forEach(function (it, k) {
      var card = el("section", "card");
      card.id = "card-" + k;
      card.dataset.index = it.index;
      card.appendChild(el("h2", null, "Response " + (k + 1) + " of " + items.length));
      card.appendChild(el("div", "meta", "problem " + it.problem_id + " · sample " + it.sample_id +
                                         " · " + it.tokens.length + " tokens"));
      if (it.prompt) {
        var det = el("details", "prompt");
        det.appendChild(el("summary", null, "show the prompt"));
        det.appendChild(el("pre", null, it.prompt));
        card.appendChild(det);
      }
      var tools = el("div", "tools");
      var lab = el("label");
      var cb = document.createElement("input");
      cb.type = "checkbox";
      cb.className = "done-box";
      cb.addEventListener("change", function () { done[k] = cb.checked; refresh(k); save(); });
      lab.appendChild(cb);
      lab.appendChild(document.createTextNode(" done"));
      var clear = el("button", null, "clear marks");
      clear.addEventListener("click", function () { marks[k].fill(0); paint(k); save(); });
      var cnt = el("span", "meta count");
      tools.appendChild(lab); tools.appendChild(clear); tools.appendChild(cnt);
      card.appendChild(tools);
      var text = el("div", "text");
      var spans = [];
      it.tokens.forEach(function (piece, j) {
        var s = el("span", "tok", piece);
        s.dataset.k = k;
        s.dataset.j = j;
        spans.push(s);
        text.appendChild(s);
      });
      card.appendChild(text);
      spansEls.push({card: card, spans: spans, box: cb, count: cnt});
      root.appendChild(card);
    });
  }

  function paint(k) {
    var m = marks[k], sp = spansEls[k].spans, n = 0;
    for (var j = 0; j < sp.length; j++) {
      sp[j].classList.toggle("m", m[j] === 1);
      n += m[j];
    }
    spansEls[k].count.textContent = n + " of " + m.length + " tokens marked";
    refresh(k);
  }

  function refresh(k) {
    spansEls[k].card.classList.toggle("done", done[k]);
    spansEls[k].box.checked = done[k];
    var d = done.filter(function (x) { return x; }).length;
    document.getElementById("progress").textContent = d + " of " + items.length + " done";
  }

  function tokenOf(target) {
    return (target && target.classList && target.classList.contains("tok")) ? target : null;
  }

  document.addEventListener("mousedown", function (ev) {
    var t = tokenOf(ev.target);
    if (!t || ev.button !== 0) return;
    ev.preventDefault();
    var k = +t.dataset.k, j = +t.dataset.j;
    drag = {k: k, anchor: j, value: marks[k][j] ? 0 : 1, before: marks[k].slice()};
    setRange(j);
  });
  document.addEventListener("mouseover", function (ev) {
    var t = tokenOf(ev.target);
    if (!drag || !t || +t.dataset.k !== drag.k) return;
    setRange(+t.dataset.j);
  });
  document.addEventListener("mouseup", function () {
    if (drag) { drag = null; save(); }
  });

  function setRange(j) {
    var m = marks[drag.k];
    m.set(drag.before);
    var a = Math.min(drag.anchor, j), b = Math.max(drag.anchor, j);
    for (var i = a; i <= b; i++) m[i] = drag.value;
    paint(drag.k);
  }

  function runsOf(m) {
    var out = [], start = -1;
    for (var j = 0; j <= m.length; j++) {
      var on = j < m.length && m[j] === 1;
      if (on && start < 0) start = j;
      if (!on && start >= 0) { out.push([start, j]); start = -1; }
    }
    return out;
  }

  function labels() {
    return {
      format: DATA.format, page_id: DATA.page_id,
      annotator: document.getElementById("annotator").value || "",
      created: new Date().toISOString(), run: DATA.run, unit: "token",
      responses: items.map(function (it, k) {
        var toks = [];
        for (var j = 0; j < marks[k].length; j++) if (marks[k][j]) toks.push(j);
        return {index: it.index, problem_id: it.problem_id, sample_id: it.sample_id,
                n_tokens: it.tokens.length, marked_tokens: toks, spans: runsOf(marks[k]), done: done[k]};
      })
    };
  }

  function save() {
    try { localStorage.setItem(KEY, JSON.stringify(labels())); } catch (e) { /* storage off: fine */ }
  }

  function restore(obj) {
    if (!obj || !obj.responses) return 0;
    var byIndex = {};
    obj.responses.forEach(function (r) { byIndex[r.index] = r; });
    var n = 0;
    items.forEach(function (it, k) {
      var r = byIndex[it.index];
      if (!r || r.n_tokens !== it.tokens.length) return;
      marks[k].fill(0);
      (r.marked_tokens || []).forEach(function (j) { if (j >= 0 && j < marks[k].length) marks[k][j] = 1; });
      done[k] = !!r.done;
      paint(k);
      n++;
    });
    if (obj.annotator) document.getElementById("annotator").value = obj.annotator;
    return n;
  }

  function download() {
    var blob = new Blob([JSON.stringify(labels(), null, 1)], {type: "application/json"});
    var a = document.getElementById("dl-link");
    if (a.href) { try { URL.revokeObjectURL(a.href); } catch (e) {} }
    var name = "labels-" + DATA.page_id + (document.getElementById("annotator").value ?
               "-" + document.getElementById("annotator").value.replace(/[^A-Za-z0-9_-]+/g, "_") : "") + ".json";
    a.href = URL.createObjectURL(blob);
    a.download = name;
    a.textContent = name;
    a.style.display = "";
    a.click();
  }

  document.getElementById("download").addEventListener("click", download);
  document.getElementById("annotator").addEventListener("change", save);
  document.getElementById("load").addEventListener("change", function (ev) {
    var f = ev.target.files[0];
    if (!f) return;
    var rd = new FileReader();
    rd.onload = function () {
      try {
        var n = restore(JSON.parse(rd.result));
        alert("Loaded the marks of " + n + " response(s).");
        save();
      } catch (e) { alert("Not a labels file: " + e); }
    };
    rd.readAsText(f);
  });

  render();
  items.forEach(function (_, k) { paint(k); });
  try { restore(JSON.parse(localStorage.getItem(KEY) || "null")); } catch (e) {}

  // #selftest: drive the page as a person would (a click, a drag) and show the labels it would save
  if (location.hash === "#selftest" && items.length) {
    var sp = spansEls[0].spans;
    function fire(type, node) {
      node.dispatchEvent(new MouseEvent(type, {bubbles: true, cancelable: true, button: 0}));
    }
    var last = Math.min(sp.length - 1, 5);
    fire("mousedown", sp[1]);
    for (var j = 2; j <= last; j++) fire("mouseover", sp[j]);
    fire("mouseup", sp[last]);
    fire("mousedown", sp[0]); fire("mouseup", sp[0]);           // a click marks one token
    fire("mousedown", sp[0]); fire("mouseup", sp[0]);           // a second click unmarks it
    spansEls[0].box.click();
    var out = document.getElementById("selftest");
    out.textContent = JSON.stringify(labels());
    out.dataset.ok = "1";
  }
})();
