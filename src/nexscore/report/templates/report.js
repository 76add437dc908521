(function () {
  "use strict";
  var node = document.getElementById("viewer-data");
  var tip = document.getElementById("tip");
  function showTip(ev, html) {
    tip.innerHTML = html;
    tip.style.display = "block";
    var x = ev.clientX + 14, y = ev.clientY + 14;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    if (x + w > window.innerWidth - 8) x = ev.clientX - w - 10;
    if (y + h > window.innerHeight - 8) y = ev.clientY - h - 10;
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }
  function hideTip() { tip.style.display = "none"; }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c];
    });
  }
  function fmt(x, d) { return (x === null || x === undefined) ? "n/a" : Number(x).toFixed(d === undefined ? 3 : d); }
  var PHASE = {E: "E (explore)", X: "X (exploit)", N: "not used (row dropped, or response under 3 rows)"};

  if (node) {
    var D = JSON.parse(node.textContent);
    var sel = document.getElementById("pick");
    var traceBox = document.getElementById("trace");
    var textBox = document.getElementById("text");
    var metaBox = document.getElementById("meta");
    var promptBox = document.getElementById("prompt");
    var current = null, tokSpans = [], rowRects = [];

    var groups = {};
    D.responses.forEach(function (r, k) {
      var g = groups[r.problem];
      if (!g) {
        g = document.createElement("optgroup");
        g.label = "problem " + r.problem;
        groups[r.problem] = g;
        sel.appendChild(g);
      }
      var o = document.createElement("option");
      o.value = k;
      o.textContent = "sample " + r.sample + " · " + r.role +
        (r.correct === true ? " · correct" : r.correct === false ? " · wrong" : "") +
        " · GMF " + fmt(r.gmf) + (r.has_phases ? "" : " · no E/X (under 3 rows)");
      g.appendChild(o);
    });

    function rowInfo(r, i) {
      var row = r.rows[i];
      var start = r.row_start[i];
      return "row " + i + " · tokens " + start + "–" + (start + row[0] - 1) + "<br>slope " +
        (row[1] === null ? "n/a" : fmt(row[1], 3) + " new neurons / token") + "<br>" + PHASE[row[2]];
    }

    function highlight(i, on) {
      if (!current) return;
      var r = current, a = r.row_start[i], b = a + r.rows[i][0];
      for (var j = a; j < b && j < tokSpans.length; j++) tokSpans[j].classList.toggle("hl", on);
      if (rowRects[i]) rowRects[i].classList.toggle("hl", on);
    }

    function svgEl(tag, attrs) {
      var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
      for (var k in attrs) e.setAttribute(k, attrs[k]);
      return e;
    }

    function drawTrace(r) {
      traceBox.innerHTML = "";
      rowRects = [];
      var W = 860, H = 230, L = 56, R = 12, T = 12, B = 40;
      var n = r.rows.length;
      var ymax = 0;
      r.rows.forEach(function (row) { if (row[1] !== null && row[1] > ymax) ymax = row[1]; });
      ymax = ymax > 0 ? ymax * 1.12 : 1;
      var sx = function (i) { return L + (W - L - R) * (i + 0.5) / n; };
      var sy = function (v) { return T + (H - T - B) * (1 - v / ymax); };
      var bw = (W - L - R) / n;
      var svg = svgEl("svg", {viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "novelty trace"});
      var fills = {E: "#ffcc80", X: "#e3effb", N: "#eceff1"};
      r.rows.forEach(function (row, i) {
        var rect = svgEl("rect", {x: L + bw * i, y: T, width: Math.max(bw - 0.5, 0.5), height: H - T - B,
                                  fill: fills[row[2]], "class": "row"});
        rect.addEventListener("mousemove", function (ev) { showTip(ev, rowInfo(r, i)); });
        rect.addEventListener("mouseenter", function () { highlight(i, true); });
        rect.addEventListener("mouseleave", function () { highlight(i, false); hideTip(); });
        rect.addEventListener("click", function () {
          var s = tokSpans[r.row_start[i]];
          if (s) textBox.scrollTop = s.offsetTop - textBox.offsetTop - 20;
        });
        svg.appendChild(rect);
        rowRects.push(rect);
      });
      for (var t = 0; t <= 4; t++) {
        var v = ymax * t / 4, y = sy(v);
        svg.appendChild(svgEl("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#d0d7de", "stroke-width": 0.6,
                                       "pointer-events": "none"}));
        var lab = svgEl("text", {x: L - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#57606a"});
        lab.textContent = v.toFixed(v >= 10 ? 0 : 2);
        svg.appendChild(lab);
      }
      var step = Math.max(1, Math.ceil(n / 12));
      for (var i = 0; i < n; i += step) {
        var tl = svgEl("text", {x: sx(i), y: H - B + 15, "text-anchor": "middle", "font-size": 11, fill: "#57606a"});
        tl.textContent = i;
        svg.appendChild(tl);
      }
      var xl = svgEl("text", {x: L + (W - L - R) / 2, y: H - 6, "text-anchor": "middle", "font-size": 12, fill: "#1d2733"});
      xl.textContent = D.row_axis || ("row (block of " + D.block_size + " tokens)");
      svg.appendChild(xl);
      var yl = svgEl("text", {x: 14, y: T + (H - T - B) / 2, "text-anchor": "middle", "font-size": 12,
                              fill: "#1d2733", transform: "rotate(-90 14 " + (T + (H - T - B) / 2) + ")"});
      yl.textContent = "novelty slope";
      svg.appendChild(yl);
      var path = "", pen = false;
      r.rows.forEach(function (row, i) {
        if (row[1] === null) { pen = false; return; }
        path += (pen ? " L " : " M ") + sx(i).toFixed(1) + " " + sy(row[1]).toFixed(1);
        pen = true;
      });
      if (path) svg.appendChild(svgEl("path", {d: path, fill: "none", stroke: "#24292f", "stroke-width": 1.6,
                                               "pointer-events": "none"}));
      r.rows.forEach(function (row, i) {
        if (row[1] === null) return;
        svg.appendChild(svgEl("circle", {cx: sx(i), cy: sy(row[1]), r: n > 60 ? 2 : 3.2,
                                         fill: row[2] === "E" ? "#e65100" : "#0d47a1", "pointer-events": "none"}));
      });
      traceBox.appendChild(svg);
    }

    function drawText(r) {
      textBox.innerHTML = "";
      tokSpans = [];
      var frag = document.createDocumentFragment();
      var row = 0;
      r.tokens.forEach(function (piece, j) {
        while (row + 1 < r.rows.length && j >= r.row_start[row + 1]) row++;
        var s = document.createElement("span");
        s.className = "tok " + r.rows[row][2] + (j === r.row_start[row] ? " rs" : "");
        s.textContent = piece;
        s.dataset.row = row;
        frag.appendChild(s);
        tokSpans.push(s);
      });
      textBox.appendChild(frag);
    }

    textBox.addEventListener("mousemove", function (ev) {
      var t = ev.target;
      if (!current || !t.classList || !t.classList.contains("tok")) { hideTip(); return; }
      var i = +t.dataset.row;
      showTip(ev, rowInfo(current, i));
    });
    textBox.addEventListener("mouseover", function (ev) {
      var t = ev.target;
      if (t.classList && t.classList.contains("tok")) highlight(+t.dataset.row, true);
    });
    textBox.addEventListener("mouseout", function (ev) {
      var t = ev.target;
      if (t.classList && t.classList.contains("tok")) highlight(+t.dataset.row, false);
    });
    textBox.addEventListener("mouseleave", hideTip);

    function show(k) {
      var r = D.responses[k];
      current = r;
      var pills = [];
      if (r.role.indexOf("NEX") >= 0) pills.push('<span class="pill pick">NEX pick</span>');
      pills.push('<span class="pill">problem ' + esc(r.problem) + " · sample " + esc(r.sample) + "</span>");
      if (r.correct === true) pills.push('<span class="pill ok">correct</span>');
      if (r.correct === false) pills.push('<span class="pill bad">wrong</span>');
      pills.push('<span class="pill">answer: ' + esc(r.answer === null ? "none extracted" : r.answer) + "</span>");
      pills.push('<span class="pill">GMF ' + fmt(r.gmf) + (r.gmf_rank ? " (rank " + r.gmf_rank + ")" : "") + "</span>");
      pills.push('<span class="pill">' + r.tokens.length + " tokens · " + r.rows.length + " rows · " +
                 r.n_explore + " E rows</span>");
      if (r.finish === "length") pills.push('<span class="pill bad">cut at max tokens</span>');
      metaBox.innerHTML = pills.join("");
      promptBox.textContent = r.prompt || "(no prompt recorded)";
      var pn = document.getElementById("phase-note");
      pn.textContent = "This response has fewer than 3 retained rows: NEX gives it no E/X labels (all rows grey).";
      pn.hidden = r.has_phases;
      drawTrace(r);
      drawText(r);
      sel.value = String(k);
    }
    sel.addEventListener("change", function () { show(+sel.value); });
    document.getElementById("prev").addEventListener("click", function () {
      show((+sel.value - 1 + D.responses.length) % D.responses.length);
    });
    document.getElementById("next").addEventListener("click", function () {
      show((+sel.value + 1) % D.responses.length);
    });
    // open on the response named by #r=K, else on the first one that has E/X labels
    var first = 0, m = /[#&]r=(\d+)/.exec(location.hash);
    if (m && +m[1] < D.responses.length) first = +m[1];
    else for (var q = 0; q < D.responses.length; q++) if (D.responses[q].has_phases) { first = q; break; }
    if (D.responses.length) show(first);
  }
  document.getElementById("js-ok").dataset.ok = "1";
})();
