// graphnet report: pan/zoom, minimap, node panel, search, before/after toggle, sortable tables.
// Plain ES2017, no libraries: the page works from file:// with no network access.
(function () {
  "use strict";
  const vp = document.getElementById("vp");
  const minimap = document.getElementById("minimap");
  const panel = document.getElementById("panel");
  const colours = JSON.parse(vp.dataset.colours || "{}");
  const views = {};
  document.querySelectorAll(".view").forEach(function (el) {
    const svg = el.querySelector("svg");
    const w = parseFloat(svg.getAttribute("width"));
    const h = parseFloat(svg.getAttribute("height"));
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.setAttribute("preserveAspectRatio", "xMinYMin meet");
    views[el.dataset.view] = { el: el, svg: svg, w: w, h: h, box: null, boxes: null };
  });
  let current = Object.keys(views)[0];
  let selected = null;

  function V() { return views[current]; }

  // ---------------------------------------------------------------- pan and zoom (viewBox)
  function setBox(v, x, y, s) {
    // s: screen pixels per graph unit. The viewBox covers exactly the viewport at that scale.
    const rw = vp.clientWidth || 800, rh = vp.clientHeight || 600;
    v.box = { x: x, y: y, s: s };
    v.svg.setAttribute("viewBox", [x, y, rw / s, rh / s].map(function (n) { return n.toFixed(2); }).join(" "));
    drawMinimap();
  }
  function fitWidth(v) {
    const rw = vp.clientWidth || 800;
    const s = Math.min(1, rw / v.w);
    setBox(v, v.w / 2 - rw / s / 2, 0, s);
  }
  function fitAll(v) {
    const rw = vp.clientWidth || 800, rh = vp.clientHeight || 600;
    const s = Math.min(rw / v.w, rh / v.h);
    setBox(v, v.w / 2 - rw / s / 2, v.h / 2 - rh / s / 2, s);
  }
  function zoomAt(v, factor, px, py) {
    const b = v.box;
    const s = Math.max(0.01, Math.min(8, b.s * factor));
    const gx = b.x + px / b.s, gy = b.y + py / b.s;
    setBox(v, gx - px / s, gy - py / s, s);
  }
  function centerOn(v, gx, gy, s) {
    const rw = vp.clientWidth || 800, rh = vp.clientHeight || 600;
    const sc = s || Math.max(v.box.s, 0.8);
    setBox(v, gx - rw / sc / 2, gy - rh / sc / 2, sc);
  }
  vp.addEventListener("wheel", function (e) {
    e.preventDefault();
    const r = vp.getBoundingClientRect();
    zoomAt(V(), Math.pow(1.0015, -e.deltaY), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  let drag = null;
  vp.addEventListener("pointerdown", function (e) {
    drag = { x: e.clientX, y: e.clientY, box: Object.assign({}, V().box), moved: false };
  });
  window.addEventListener("pointermove", function (e) {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; vp.classList.add("dragging"); }
    if (drag.moved) setBox(V(), drag.box.x - dx / drag.box.s, drag.box.y - dy / drag.box.s, drag.box.s);
  });
  window.addEventListener("pointerup", function () {
    vp.classList.remove("dragging");
    setTimeout(function () { drag = null; }, 0);
  });
  vp.addEventListener("dblclick", function () { fitAll(V()); });

  // ---------------------------------------------------------------- minimap
  function nodeBoxes(v) {
    if (v.boxes) return v.boxes;
    const out = [];
    v.svg.querySelectorAll("g.node, g.io").forEach(function (g) {
      const m = /translate\(([-\d.]+),([-\d.]+)\)/.exec(g.getAttribute("transform"));
      const r = g.querySelector("rect.box");
      if (!m || !r) return;
      let fam = "io";
      g.classList.forEach(function (c) { if (c.indexOf("f-") === 0) fam = c.slice(2); });
      out.push({
        x: parseFloat(m[1]), y: parseFloat(m[2]),
        w: parseFloat(r.getAttribute("width")), h: parseFloat(r.getAttribute("height")),
        c: colours[fam] || "#888", g: g,
      });
    });
    v.boxes = out;
    return out;
  }
  // The minimap fits the graph's width; a graph taller than the minimap scrolls in it, keeping
  // the viewport's rectangle in the middle (DenseNet-121 is 40 times taller than it is wide:
  // fitting it whole would draw it two pixels wide).
  function miniScale(v) {
    return Math.min(minimap.width / v.w, 0.25 * (window.devicePixelRatio || 1));
  }
  function miniOffset(v, m) {
    if (!v.box) return 0;
    const rh = vp.clientHeight || 600;
    const centre = (v.box.y + rh / v.box.s / 2) * m;
    return Math.max(0, Math.min(centre - minimap.height / 2, v.h * m - minimap.height));
  }
  function drawMinimap() {
    if (!minimap) return;
    const v = V();
    const dpr = window.devicePixelRatio || 1;
    const cw = Math.round(minimap.clientWidth * dpr), ch = Math.round(minimap.clientHeight * dpr);
    if (minimap.width !== cw || minimap.height !== ch) { minimap.width = cw; minimap.height = ch; }
    const ctx = minimap.getContext("2d");
    ctx.clearRect(0, 0, cw, ch);
    const m = miniScale(v);
    const off = miniOffset(v, m);
    nodeBoxes(v).forEach(function (b) {
      const y = b.y * m - off;
      if (y + b.h * m < 0 || y > ch) return;
      ctx.fillStyle = b.g === selected ? "#ff2d95" : b.c;
      ctx.fillRect(b.x * m, y, Math.max(1, b.w * m), Math.max(1, b.h * m));
    });
    if (v.box) {
      const rw = vp.clientWidth || 800, rh = vp.clientHeight || 600;
      ctx.strokeStyle = "#ff2d95";
      ctx.lineWidth = Math.max(1, dpr);
      ctx.strokeRect(v.box.x * m, v.box.y * m - off, rw / v.box.s * m, rh / v.box.s * m);
    }
  }
  let miniDrag = false;
  function miniJump(e) {
    const v = V();
    const r = minimap.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const m = miniScale(v);
    const off = miniOffset(v, m);
    centerOn(v, (e.clientX - r.left) * dpr / m, ((e.clientY - r.top) * dpr + off) / m, v.box.s);
  }
  if (minimap) {
    minimap.addEventListener("pointerdown", function (e) { miniDrag = true; miniJump(e); });
    window.addEventListener("pointermove", function (e) { if (miniDrag) miniJump(e); });
    window.addEventListener("pointerup", function () { miniDrag = false; });
  }

  // ---------------------------------------------------------------- views
  function show(name) {
    if (!views[name]) return;
    current = name;
    Object.keys(views).forEach(function (k) { views[k].el.classList.toggle("hidden", k !== name); });
    document.querySelectorAll("[data-show]").forEach(function (b) {
      b.classList.toggle("on", b.dataset.show === name);
    });
    document.querySelectorAll(".layers-table").forEach(function (t) {
      t.classList.toggle("hidden", t.dataset.view !== name);
    });
    if (!V().box) fitWidth(V()); else drawMinimap();
  }
  document.querySelectorAll("[data-show]").forEach(function (b) {
    b.addEventListener("click", function () { show(b.dataset.show); });
  });

  // ---------------------------------------------------------------- selection and panel
  function findNode(view, name) {
    const v = views[view];
    if (!v) return null;
    let found = null;
    v.svg.querySelectorAll("g.node").forEach(function (g) { if (g.dataset.node === name) found = g; });
    return found;
  }
  function clearHighlight() {
    document.querySelectorAll("g.hl").forEach(function (g) { g.classList.remove("hl"); });
    document.querySelectorAll("path.hl-edge").forEach(function (p) { p.classList.remove("hl-edge"); });
  }
  // The edges of node g (lit up) and its neighbours: [items feeding it, items it feeds].
  function neighbours(g) {
    const svg = g.ownerSVGElement;
    const k = g.dataset.k;
    const ins = [], outs = [];
    svg.querySelectorAll("path.edge").forEach(function (p) {
      const e = p.dataset.e.split(" ");
      if (e[0] !== k && e[1] !== k) return;
      p.classList.add("hl-edge");
      const other = svg.querySelector('[data-k="' + (e[0] === k ? e[1] : e[0]) + '"]');
      if (other) (e[1] === k ? ins : outs).push(other);
    });
    return [ins, outs];
  }
  function neighbourList(label, items) {
    const p = document.createElement("p");
    p.className = "nb";
    p.appendChild(document.createTextNode(label + ": "));
    if (!items.length) p.appendChild(document.createTextNode("none"));
    items.forEach(function (it, i) {
      if (i) p.appendChild(document.createTextNode(", "));
      if (it.classList.contains("node")) {
        const a = document.createElement("a");
        a.href = "#graph";
        a.textContent = it.dataset.node + " (" + it.dataset.op + ")";
        a.addEventListener("click", function (e) { e.preventDefault(); select(it, true); });
        p.appendChild(a);
      } else {
        p.appendChild(document.createTextNode((it.classList.contains("io-in") ? "input " : "output ") + it.dataset.value));
      }
    });
    return p;
  }
  function select(g, center) {
    clearHighlight();
    selected = g;
    if (!g) { drawMinimap(); return; }
    g.classList.add("hl");
    const name = g.dataset.node;
    const title = g.querySelector("title");
    const other = current === "before" ? "after" : "before";
    panel.innerHTML = "<h3></h3><pre></pre>";  // filled with textContent: names are not markup
    panel.querySelector("h3").textContent = name;
    panel.querySelector("pre").textContent = title ? title.textContent : "";
    const nb = neighbours(g);
    panel.appendChild(neighbourList("from", nb[0]));
    panel.appendChild(neighbourList("to", nb[1]));
    const status = ["removed", "changed", "added", "declined"].filter(function (s) {
      return g.classList.contains("st-" + s);
    });
    if (status.length) {
      const p = document.createElement("p");
      p.className = "st-text-" + status[0];
      p.textContent = {
        removed: "Removed by optimize.", changed: "Changed by optimize.",
        added: "Added by optimize.", declined: "optimize declined to change this node (see the notes).",
      }[status[0]];
      panel.appendChild(p);
    }
    if (views[other] && findNode(other, name)) {
      const b = document.createElement("button");
      b.textContent = "show in the " + (other === "before" ? "original" : "optimized") + " graph";
      b.addEventListener("click", function () { show(other); focusNode(other, name); });
      panel.appendChild(b);
    }
    document.querySelectorAll("figure.act").forEach(function (f) {
      if (f.dataset.node === name) panel.appendChild(f.cloneNode(true));
    });
    document.querySelectorAll("tr[data-node]").forEach(function (tr) {
      tr.classList.toggle("sel", tr.dataset.node === name);
    });
    if (center) {
      const m = /translate\(([-\d.]+),([-\d.]+)\)/.exec(g.getAttribute("transform"));
      const r = g.querySelector("rect.box");
      if (m && r) {
        centerOn(V(), parseFloat(m[1]) + parseFloat(r.getAttribute("width")) / 2,
          parseFloat(m[2]) + parseFloat(r.getAttribute("height")) / 2);
      }
    }
    drawMinimap();
  }
  function focusNode(view, name) {
    const g = findNode(view, name);
    if (g) { if (current !== view) show(view); select(g, true); }
    return g;
  }
  Object.keys(views).forEach(function (k) {
    views[k].svg.addEventListener("click", function (e) {
      if (drag && drag.moved) return;
      const g = e.target.closest ? e.target.closest("g.node") : null;
      if (g) select(g, false);
    });
  });

  // ---------------------------------------------------------------- search
  const search = document.getElementById("search");
  let hits = [], hit = -1;
  if (search) {
    search.addEventListener("keydown", function (e) {
      if (e.key !== "Enter") return;
      const q = search.value.trim().toLowerCase();
      if (!q) return;
      hits = Array.prototype.filter.call(V().svg.querySelectorAll("g.node"), function (g) {
        return g.dataset.node.toLowerCase().indexOf(q) >= 0 || g.dataset.op.toLowerCase() === q;
      });
      if (!hits.length) { search.style.borderColor = "#c0392b"; return; }
      search.style.borderColor = "";
      hit = (hit + 1) % hits.length;
      select(hits[hit], true);
    });
    search.addEventListener("input", function () { hit = -1; });
  }
  const fit = document.getElementById("fit");
  if (fit) fit.addEventListener("click", function () { fitAll(V()); });
  const fitW = document.getElementById("fitwidth");
  if (fitW) fitW.addEventListener("click", function () { fitWidth(V()); });

  // ---------------------------------------------------------------- report lines and tables
  document.querySelectorAll(".passes li[data-nodes]").forEach(function (li) {
    li.addEventListener("click", function () {
      const names = JSON.parse(li.dataset.nodes);
      let first = null;
      ["before", "after"].forEach(function (view) {
        if (first) return;
        names.forEach(function (n) { if (!first && findNode(view, n)) first = view; });
      });
      if (!first) return;
      show(first);
      let firstNode = null;
      names.forEach(function (n) { const g = findNode(first, n); if (g && !firstNode) firstNode = g; });
      select(firstNode, true);
      names.forEach(function (n) { const g = findNode(first, n); if (g) g.classList.add("hl"); });
      document.getElementById("graph").scrollIntoView();
    });
  });
  document.querySelectorAll("tr[data-node]").forEach(function (tr) {
    tr.addEventListener("click", function () {
      focusNode(tr.closest("table").dataset.view, tr.dataset.node);
      document.getElementById("graph").scrollIntoView();
    });
  });
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.addEventListener("click", function () {
      const table = th.closest("table");
      const body = table.tBodies[0];
      const idx = Array.prototype.indexOf.call(th.parentNode.children, th);
      const dir = th.dataset.dir === "asc" ? -1 : 1;
      th.parentNode.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = dir === 1 ? "asc" : "desc";
      const rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        const x = a.cells[idx].dataset.v !== undefined ? parseFloat(a.cells[idx].dataset.v) : a.cells[idx].textContent;
        const y = b.cells[idx].dataset.v !== undefined ? parseFloat(b.cells[idx].dataset.v) : b.cells[idx].textContent;
        return (x < y ? -1 : x > y ? 1 : 0) * dir;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });

  window.addEventListener("resize", function () { if (V().box) setBox(V(), V().box.x, V().box.y, V().box.s); });
  show(current);
  // A link can open the page on a node: report.html#node=conv2 (or #after:node=conv2).
  const deep = /^#(?:(before|after):)?node=(.+)$/.exec(window.location.hash);
  if (deep) focusNode(deep[1] || "before", decodeURIComponent(deep[2]));
  window.graphnetReport = { ready: true, views: Object.keys(views), focus: focusNode, show: show };
})();
