/* searchrl run viewer: draws the page's embedded JSON (script#data) with createElement and
   textContent only. Model text (responses, prompts, feedback, actions) never goes through
   innerHTML, so a response holding markup is shown as the characters it is. No network, no
   modules: the pages work from file://. */
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("data").textContent);
  var EXPAND_ALL_LIMIT = 3000; // nodes drawn at most by "expand all"

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = String(v);
        else if (k === "onclick") node.addEventListener("click", v);
        else if (k === "oninput") node.addEventListener("input", v);
        else if (k === "onchange") node.addEventListener("change", v);
        else node.setAttribute(k, v === true ? "" : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) add(node, arguments[i]);
    return node;
  }

  function add(parent, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { add(parent, c); }); return; }
    parent.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }

  // text with `code` spans (the reports' Markdown): code segments in <code>, all as text
  function inline(text) {
    var parts = String(text).split("`");
    var span = el("span");
    parts.forEach(function (p, i) {
      if (!p) return;
      add(span, i % 2 ? el("code", { text: p }) : p.replace(/\*\*/g, ""));
    });
    return span;
  }

  function fmt(x, digits) {
    if (x === null || x === undefined) return "–";
    if (typeof x !== "number") return String(x);
    if (Number.isInteger(x)) return String(x);
    var a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
    return x.toFixed(digits === undefined ? 3 : digits);
  }

  // a number for an axis: four significant digits, no trailing zeros
  function short(x) {
    if (typeof x !== "number") return String(x);
    var a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(2);
    return String(parseFloat(x.toPrecision(4)));
  }

  // page numbers to link: all of a few, else the first and last pages and those around the current one
  function pageNumbers(n, current) {
    var out = [];
    for (var k = 0; k < n; k++) {
      if (n <= 12 || k < 2 || k >= n - 2 || Math.abs(k - current) <= 2) out.push(k);
      else if (out[out.length - 1] !== null) out.push(null);
    }
    return out;
  }

  function badge(text, cls) { return el("span", { class: "badge " + (cls || ""), text: text }); }

  function grade(correct) {
    return correct ? badge("correct", "ok") : badge("incorrect", "bad");
  }

  function details(summary, open, body) {
    var d = el("details", { open: open || null }, el("summary", { text: summary }));
    if (typeof body === "function") {
      var drawn = false;
      d.addEventListener("toggle", function () { if (d.open && !drawn) { drawn = true; add(d, body()); } });
      if (open) { drawn = true; add(d, body()); }
    } else add(d, body);
    return d;
  }

  function pre(text, cls) { return el("pre", { class: cls || "text", text: text }); }

  function kv(obj) {
    var dl = el("dl", { class: "kv" });
    Object.keys(obj || {}).forEach(function (k) {
      var v = obj[k];
      add(dl, [el("dt", { text: k }), el("dd", { text: typeof v === "string" ? v : JSON.stringify(v) })]);
    });
    return dl;
  }

  // ------------------------------------------------------------------ frame

  function header() {
    var top = document.getElementById("top");
    var nav = el("nav");
    DATA.nav.forEach(function (n) {
      var active = n.key === DATA.page || n.key === DATA.section || (DATA.page === n.key);
      add(nav, el("a", { href: n.href, class: active ? "active" : null, id: "nav-" + n.key },
                  n.title, n.count !== null ? el("span", { class: "count", text: n.count }) : null));
    });
    add(top, [el("div", { class: "brand" }, el("strong", { text: "searchrl" }), " run ",
                 el("span", { class: "runname", text: DATA.run.name, title: DATA.run.path })), nav]);
  }

  // ------------------------------------------------------------------ overview

  function table(head, rows, align) {
    var t = el("table");
    var tr = el("tr");
    head.forEach(function (h, i) { add(tr, el("th", { class: align && align[i] === "right" ? "num" : null }, inline(h))); });
    add(t, el("thead", null, tr));
    var body = el("tbody");
    rows.forEach(function (r) {
      var row = el("tr");
      r.forEach(function (c, i) {
        var cell = el("td", { class: align && align[i] === "right" ? "num" : null });
        add(cell, c !== null && typeof c === "object" ? c : inline(c === null || c === undefined ? "" : c));
        add(row, cell);
      });
      add(body, row);
    });
    add(t, body);
    return el("div", { class: "tablewrap" }, t);
  }

  function blocks(bs) {
    return bs.map(function (b) {
      if (b.type === "heading") return el("h" + Math.min(6, b.level + 2), null, inline(b.text));
      if (b.type === "p") return el("p", null, inline(b.text));
      if (b.type === "table") return table(b.head, b.rows, b.align);
      if (b.type === "image") {
        return b.src ? el("figure", null, el("img", { src: b.src, alt: b.alt, loading: "lazy" }),
                          el("figcaption", { text: b.alt }))
                     : el("p", { class: "muted", text: "(plot " + b.alt + " is not in the run directory)" });
      }
      return null;
    });
  }

  function overview() {
    var app = [];
    app.push(el("h1", null, "Run ", el("span", { class: "runname", text: DATA.run.name })));
    app.push(el("p", { class: "muted", text: DATA.run.path + (DATA.task ? " · task " + DATA.task : "") }));
    var counts = DATA.nav.filter(function (n) { return n.count !== null; });
    app.push(el("ul", { class: "summary" }, counts.map(function (n) {
      return el("li", null, el("a", { href: n.href, text: n.title }), ": " + n.count);
    })));

    app.push(el("h2", { text: "Stages" }));
    if (!DATA.stages.length) app.push(el("p", { class: "muted", text: "No stage records (stage.json) in this run." }));
    else {
      app.push(table(["directory", "stage", "done", "iterations", "depends on"], DATA.stages.map(function (s) {
        var its = s.iterations.map(function (it) {
          var g = it.gen_stats || {};
          var line = it.dir.split("/").pop() + ": " + (it.done.examples !== undefined ? it.done.examples + " examples" : "done");
          if (g.problems !== undefined) line += ", kept " + g.kept + " of " + g.problems;
          if (g.solved_by_round) line += " (solved by round " + g.solved_by_round.join(" / ") + ")";
          return el("div", { text: line });
        });
        return [el("code", { text: s.dir }), s.stage || "", s.done ? badge("done", "ok") : badge("not done", "bad"),
                el("div", null, its), details("settings", false, function () { return pre(JSON.stringify(s.depends, null, 2), "json"); })];
      })));
    }

    app.push(el("h2", { text: "Results" }));
    if (!DATA.results.length) app.push(el("p", { class: "muted", text: "No results.md in this run yet." }));
    DATA.results.forEach(function (r) {
      app.push(el("section", { class: "card result" }, el("h3", null, el("code", { text: r.path })), blocks(r.blocks)));
    });
    if (DATA.plots.length) {
      app.push(el("h2", { text: "Plots" }));
      app.push(el("div", { class: "gallery" }, DATA.plots.map(function (p) {
        return el("figure", null, el("a", { href: p.src }, el("img", { src: p.src, alt: p.path, loading: "lazy" })),
                  el("figcaption", null, el("code", { text: p.path })));
      })));
    }
    if (DATA.timings) {
      app.push(el("h2", { text: "Timings (timings.json, seconds)" }));
      app.push(table(["part", "seconds"], Object.keys(DATA.timings).map(function (k) { return [k, fmt(DATA.timings[k], 1)]; }),
                     ["left", "right"]));
    }
    app.push(el("h2", { text: "Recorded config" }));
    app.push(details("config.yaml", false, function () { return pre(DATA.config_text, "json"); }));
    return app;
  }

  // ------------------------------------------------------------------ section index

  function section() {
    var out = [el("h1", { text: DATA.title })];
    if (!DATA.groups.length) {
      out.push(el("p", { class: "muted", text: "This run has no " + DATA.unit + " records." }));
      return out;
    }
    out.push(table(["group", "directory", DATA.unit + "s", "correct", "incorrect", "accuracy", "pages"],
      DATA.groups.map(function (g) {
        var c = g.counts;
        function link(grade, n) { return g.grades[grade] ? el("a", { href: g.grades[grade], text: n }) : n; }
        return [el("a", { href: g.pages[0], text: g.title }), el("code", { text: g.path }), c.total, link("correct", c.correct),
                link("incorrect", c.total - c.correct), c.total ? fmt(100 * c.correct / c.total, 1) + "%" : "–",
                el("span", null, pageNumbers(g.pages.length, 0).map(function (k) {
                  return k === null ? "… " : el("a", { href: g.pages[k], class: "pagelink", text: k + 1 });
                }))];
      }), ["left", "left", "right", "right", "right", "right", "left"]));
    return out;
  }

  // ------------------------------------------------------------------ trees

  /* An expandable tree of nodes {id, parent, action, value, visits, terminal, reward, chosen, ...}.
     Children are drawn when their parent is first expanded (large trees stay cheap). */
  function tree(nodes) {
    var byId = {}, kids = {}, root = null;
    nodes.forEach(function (n) { byId[n.id] = n; kids[n.id] = []; });
    nodes.forEach(function (n) {
      if (n.parent === null || n.parent === undefined || !(n.parent in byId)) { if (root === null) root = n; }
      else kids[n.parent].push(n);
    });
    var box = el("div", { class: "tree" });
    var rows = {};

    function row(n) {
      var li = el("li", { class: "node" + (n.chosen ? " chosen" : "") + (n.terminal ? " terminal" : ""), "data-node": n.id });
      var k = kids[n.id];
      var toggle = el("button", { class: "toggle", type: "button", "aria-expanded": "false",
                                  title: k.length ? "expand / collapse" : "leaf", disabled: k.length ? null : true,
                                  text: k.length ? "▸" : "·" });
      var label = el("span", { class: "label" });
      // a search's actions are often whole lines (or several): those are drawn as a block under the badges
      var text = (n.action || "").replace(/\n+$/, "");
      var block = text.indexOf("\n") >= 0 ? el("div", { class: "action block", text: text }) : null;
      if (!block) add(label, el("span", { class: "action", text: text || (n.parent === null || n.parent === undefined ? "(root)" : "(empty)") }));
      else add(label, el("span", { class: "muted nodeid", text: "node " + n.id }));
      if (n.state) add(label, el("span", { class: "state", text: n.state }));
      if (n.value !== null && n.value !== undefined) add(label, badge("value " + fmt(n.value), "val"));
      if (n.visits !== null && n.visits !== undefined) add(label, badge("visits " + n.visits, "vis"));
      if (n.reward !== null && n.reward !== undefined) add(label, badge("reward " + fmt(n.reward, 2), n.reward > 0 ? "ok" : "bad"));
      if (n.status && n.status !== "explored" && n.status !== "root") add(label, badge(n.status, "st-" + n.status));
      else if (n.terminal) add(label, badge("terminal", ""));
      if (n.chosen) add(label, badge("chosen", "chosen"));
      if (k.length) add(label, el("span", { class: "muted nkids", text: k.length + (k.length === 1 ? " child" : " children") }));
      add(li, [toggle, label, block]);
      if (n.notes && n.notes.length) add(li, el("div", { class: "notes" }, n.notes.map(function (t) { return el("div", { text: t }); })));
      var ul = null;
      function set(open) {
        if (!k.length) return;
        if (open && !ul) { ul = el("ul"); k.forEach(function (c) { add(ul, row(c)); }); add(li, ul); }
        if (ul) ul.hidden = !open;
        toggle.textContent = open ? "▾" : "▸";
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
        li.classList.toggle("open", open);
      }
      toggle.addEventListener("click", function () { set(toggle.getAttribute("aria-expanded") !== "true"); });
      rows[n.id] = { set: set, node: n };
      return li;
    }

    if (root === null) return el("p", { class: "muted", text: "(empty tree)" });
    var top = el("ul", { class: "treeroot" }, row(root));
    rows[root.id].set(true);

    function expandWhere(pred, limit) {
      var drawn = 0, stack = [root];
      while (stack.length && drawn < limit) {
        var n = stack.pop();
        if (!pred(n)) continue;
        if (rows[n.id]) { rows[n.id].set(true); drawn += kids[n.id].length; }
        kids[n.id].forEach(function (c) { stack.push(c); });
      }
    }
    var controls = el("div", { class: "treecontrols" },
      el("button", { type: "button", class: "expand-chosen", text: "expand chosen path",
                     onclick: function () { expandWhere(function (n) { return n.chosen; }, Infinity); } }),
      el("button", { type: "button", class: "expand-all", text: "expand all",
                     onclick: function () { expandWhere(function () { return true; }, EXPAND_ALL_LIMIT); } }),
      el("button", { type: "button", class: "collapse-all", text: "collapse all",
                     onclick: function () { Object.keys(rows).forEach(function (id) { if (+id !== root.id) rows[id].set(false); }); } }),
      el("span", { class: "muted", text: nodes.length + " nodes" +
        (nodes.some(function (n) { return n.chosen; }) ? "; the chosen path is highlighted" : "") }));
    add(box, [controls, top]);
    return box;
  }

  // ------------------------------------------------------------------ items

  function problemBlock(problem) {
    if (!problem) return null;
    return details("problem", false, function () { return kv(problem); });
  }

  function responseBlock(it) {
    var box = el("pre", { class: "text response" });
    if (it.prefix_len && it.prefix_chars !== null && it.prefix_chars !== undefined) {
      add(box, [el("span", { class: "prefix", title: "guided prefix: " + it.prefix_len + " tokens given, not sampled",
                             text: it.response.slice(0, it.prefix_chars) }),
                el("span", { class: "continuation", title: "the model's continuation", text: it.response.slice(it.prefix_chars) })]);
      return [el("div", { class: "legend" }, el("span", { class: "prefix", text: "guided prefix (" + it.prefix_len + " tokens)" }),
                 " ", el("span", { class: "continuation", text: "model continuation" })), box];
    }
    box.textContent = it.response;
    var note = it.prefix_len ? el("div", { class: "legend muted", text: "starts with a guided prefix of " + it.prefix_len +
      " tokens (its end in the text is unknown: the policy's tokenizer.json is not in the run directory)" }) : null;
    return [note, box];
  }

  function head(it, extra) {
    var h = el("div", { class: "itemhead" });
    add(h, el("span", { class: "idx", text: "problem " + fmt(it.index) + (it.sample !== undefined && it.sample !== null ? " · sample " + it.sample : "") }));
    add(h, grade(it.correct));
    if (it.reward !== null && it.reward !== undefined) add(h, badge("reward " + fmt(it.reward, 2), ""));
    if (it.split) add(h, badge(it.split + (it.mode ? " · " + it.mode : ""), "muted"));
    add(h, extra);
    return h;
  }

  function sampleCard(it) {
    var extra = [];
    if (it.num_tokens !== null && it.num_tokens !== undefined) extra.push(badge(it.num_tokens + " tokens", ""));
    if (it.finish_reason) extra.push(badge(it.finish_reason, it.finish_reason === "stop" ? "" : "warn"));
    if (it.meta && it.meta.solved_round !== undefined) {
      var r = it.meta.solved_round;
      extra.push(badge(r < 0 ? "not solved" : r === 0 ? "solved unguided" : "solved in guidance round " + r, r > 0 ? "guided" : ""));
    }
    var card = el("article", { class: "item card " + (it.correct ? "is-correct" : "is-incorrect"), "data-correct": it.correct ? "1" : "0" },
      head(it, extra), problemBlock(it.problem), responseBlock(it));
    if (it.sos) {
      var s = it.sos;
      card.appendChild(details("search tree of this Stream-of-Search trace: " + s.nodes.length + " nodes, " +
        (s.goal !== null ? "goal reached" : "no goal reached") + (s.unparsed ? ", " + s.unparsed + (s.unparsed === 1 ? " line" : " lines") + " not in the trace format" : ""),
        false, function () { return tree(s.nodes); }));
    }
    return card;
  }

  function episodeCard(it) {
    var nt = it.n_turns || it.turns.length;
    var extra = [badge(nt + (nt === 1 ? " turn" : " turns"), "")];
    if (it.round) extra.push(badge("guidance round " + it.round, "guided"));
    if (it.first_correct !== undefined && it.first_correct !== null) extra.push(badge("first turn " + (it.first_correct ? "correct" : "incorrect"), it.first_correct ? "ok" : "muted"));
    if (it.num_tokens !== null && it.num_tokens !== undefined) extra.push(badge(it.num_tokens + " tokens", ""));
    var card = el("article", { class: "item card episode " + (it.correct ? "is-correct" : "is-incorrect"), "data-correct": it.correct ? "1" : "0" },
      head(it, extra), problemBlock(it.problem));
    var turn = 0;
    it.messages.forEach(function (m) {
      if (m.role === "assistant") {
        var t = it.turns[turn] || {};
        add(card, el("div", { class: "turn assistant" },
          el("div", { class: "turnhead" }, el("strong", { text: "Turn " + (turn + 1) + " · model" }),
             t.correct !== undefined ? grade(t.correct) : null,
             t.reward !== undefined ? badge("reward " + fmt(t.reward, 2), "") : null,
             t.done ? badge("public tests pass", "ok") : null,
             t.finish_reason ? badge(t.finish_reason, t.finish_reason === "stop" ? "" : "warn") : null,
             t.tokens !== undefined ? badge(t.tokens + " tokens", "") : null),
          pre(m.content)));
        turn += 1;
      } else {
        add(card, el("div", { class: "turn feedback" }, el("div", { class: "turnhead" }, el("strong", { text: "Feedback (" + m.role + ")" })),
                     pre(m.content)));
      }
    });
    var last = it.turns[it.turns.length - 1];
    if (last && last.feedback && !last.done) {
      add(card, el("div", { class: "turn feedback" }, el("div", { class: "turnhead" }, el("strong", { text: "Feedback on the last turn (episode ended)" })),
                   pre(last.feedback)));
    }
    return card;
  }

  function treeCard(it) {
    var extra = [];
    if (it.method) extra.push(badge(it.method, ""));
    if (it.budget !== null && it.budget !== undefined) extra.push(badge("budget " + it.budget, ""));
    if (it.generated_tokens !== null && it.generated_tokens !== undefined) extra.push(badge(it.generated_tokens + " tokens generated", ""));
    return el("article", { class: "item card " + (it.correct ? "is-correct" : "is-incorrect"), "data-correct": it.correct ? "1" : "0" },
      head(it, extra),
      it.prompt ? details("prompt", false, function () { return pre(it.prompt); }) : null,
      it.response !== undefined && it.response !== null ? details("final response", false, function () { return pre(it.response, "text response"); }) : null,
      el("div", { class: "treehead", text: "Search tree" }), tree(it.nodes));
  }

  function searchText(it) {
    var parts = [it.response || "", it.prompt || "", JSON.stringify(it.problem || "")];
    (it.messages || []).forEach(function (m) { parts.push(m.content); });
    (it.nodes || []).forEach(function (n) { parts.push(n.action || ""); });
    return parts.join("\n").toLowerCase();
  }

  function pager() {
    var p = el("nav", { class: "pager" });
    if (DATA.pages.length <= 1) return p;
    var i = DATA.page_no - 1;
    add(p, el("a", { href: i > 0 ? DATA.pages[i - 1] : null, class: "prev" + (i > 0 ? "" : " off"), text: "‹ previous" }));
    pageNumbers(DATA.pages.length, i).forEach(function (k) {
      add(p, k === null ? el("span", { class: "muted", text: "…" })
                        : el("a", { href: DATA.pages[k], class: "pagelink" + (k === i ? " current" : ""), text: k + 1 }));
    });
    add(p, el("a", { href: i < DATA.pages.length - 1 ? DATA.pages[i + 1] : null,
                     class: "next" + (i < DATA.pages.length - 1 ? "" : " off"), text: "next ›" }));
    return p;
  }

  function items() {
    var g = DATA.group;
    var out = [el("p", { class: "crumbs" }, el("a", { href: DATA.section_href, text: "all groups" }), " / ", el("code", { text: g.path }))];
    out.push(el("h1", { text: g.title }));
    var shownFrom = DATA.first + 1, shownTo = DATA.first + DATA.items.length;
    var scope = DATA.grade === "all" ? "" : " " + DATA.grade;
    out.push(el("p", { class: "muted", text: g.counts.total + " " + DATA.unit + "s, " + g.counts.correct + " correct; this page:" +
      scope + " " + DATA.unit + "s " + shownFrom + "–" + shownTo + " of " + DATA.total + " (page " + DATA.page_no + " of " + DATA.pages.length + ")" }));
    var sets = el("p", { class: "gradesets" }, "Pages of this group: ");
    [["all", g.counts.total], ["correct", g.counts.correct], ["incorrect", g.counts.total - g.counts.correct]].forEach(function (gc) {
      var href = DATA.grades[gc[0]];
      add(sets, el("a", { href: href, id: "grade-" + gc[0], class: "pagelink" + (gc[0] === DATA.grade ? " current" : "") + (href ? "" : " off"),
                          text: gc[0] + " (" + gc[1] + ")" }));
    });
    out.push(sets);
    var draw = DATA.page === "episodes" ? episodeCard : DATA.page === "trees" ? treeCard : sampleCard;
    var cards = DATA.items.map(function (it) { var c = draw(it); c._text = searchText(it); return c; });
    var status = el("span", { class: "muted", id: "shown" });
    var which = "all", query = "";
    function apply() {
      var n = 0;
      cards.forEach(function (c) {
        var ok = (which === "all" || (which === "correct") === (c.getAttribute("data-correct") === "1")) &&
                 (!query || c._text.indexOf(query) >= 0);
        c.hidden = !ok;
        if (ok) n += 1;
      });
      status.textContent = n + " of " + cards.length + " shown on this page";
    }
    var bar = el("div", { class: "filters" }, "Show: ");
    ["all", "correct", "incorrect"].forEach(function (w) {
      var input = el("input", { type: "radio", name: "grade", id: "filter-" + w, value: w, checked: w === "all" || null,
                                onchange: function () { which = w; apply(); } });
      add(bar, el("label", { for: "filter-" + w }, input, " " + w));
    });
    add(bar, el("input", { type: "search", id: "filter-text", placeholder: "find text on this page",
                           oninput: function (e) { query = e.target.value.toLowerCase(); apply(); } }));
    add(bar, status);
    out.push(bar, pager(), el("div", { class: "items" }, cards), pager());
    apply();
    return out;
  }

  // ------------------------------------------------------------------ training curves

  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    var n = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { n.setAttribute(k, attrs[k]); });
    return n;
  }

  function chart(name, xs, ys) {
    var W = 300, H = 150, L = 48, R = 8, T = 20, B = 22;
    var pts = [];
    xs.forEach(function (x, i) { if (typeof ys[i] === "number" && typeof x === "number") pts.push([x, ys[i]]); });
    var box = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "chart", role: "img" });
    var title = svg("title"); title.textContent = name; box.appendChild(title);
    var label = svg("text", { x: 4, y: 13, class: "ctitle" }); label.textContent = name; box.appendChild(label);
    if (!pts.length) return box;
    var x0 = Math.min.apply(null, pts.map(function (p) { return p[0]; })), x1 = Math.max.apply(null, pts.map(function (p) { return p[0]; }));
    var y0 = Math.min.apply(null, pts.map(function (p) { return p[1]; })), y1 = Math.max.apply(null, pts.map(function (p) { return p[1]; }));
    if (x1 === x0) { x1 = x0 + 1; }
    if (y1 === y0) { y1 = y0 + (Math.abs(y0) || 1) * 0.5; y0 = y0 - (Math.abs(y0) || 1) * 0.5; }
    function sx(x) { return L + (x - x0) / (x1 - x0) * (W - L - R); }
    function sy(y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); }
    box.appendChild(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plotarea" }));
    [[y1, sy(y1)], [y0, sy(y0)]].forEach(function (t) {
      var tx = svg("text", { x: L - 4, y: t[1] + 4, class: "tick", "text-anchor": "end" }); tx.textContent = short(t[0]); box.appendChild(tx);
    });
    [[x0, sx(x0), "start"], [x1, sx(x1), "end"]].forEach(function (t) {
      var tx = svg("text", { x: t[1], y: H - 6, class: "tick", "text-anchor": t[2] }); tx.textContent = "step " + fmt(t[0]); box.appendChild(tx);
    });
    var d = pts.map(function (p, i) { return (i ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1); }).join(" ");
    box.appendChild(svg("path", { d: d, class: "line" }));
    if (pts.length <= 40) pts.forEach(function (p) {
      var c = svg("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 2, class: "dot" });
      var t = svg("title"); t.textContent = "step " + p[0] + ": " + fmt(p[1], 4); c.appendChild(t); box.appendChild(c);
    });
    return box;
  }

  var KIND = { rl: "RL", sft: "SFT", value: "Value model", other: "Other" };
  function training() {
    var out = [el("h1", { text: "Training curves" })];
    if (!DATA.curves.length) { out.push(el("p", { class: "muted", text: "No metrics.jsonl in this run." })); return out; }
    var first = true; // the first log shown is drawn open
    ["rl", "sft", "value", "other"].forEach(function (kind) {
      var cs = DATA.curves.filter(function (c) { return c.kind === kind; });
      if (!cs.length) return;
      out.push(el("h2", { text: KIND[kind] + " (" + cs.length + ")" }));
      cs.forEach(function (c, i) {
        var keys = Object.keys(c.series);
        out.push(details(c.path + (c.stage ? " · " + c.stage : "") + " · " + c.steps.length + " log steps", first,
          function () {
            return el("div", { class: "charts" }, keys.map(function (k) { return chart(k, c.steps, c.series[k]); }));
          }));
        first = false;
      });
    });
    return out;
  }

  // ------------------------------------------------------------------ main

  header();
  var app = document.getElementById("app");
  app.textContent = "";
  var body = DATA.page === "overview" ? overview() : DATA.page === "section" ? section()
           : DATA.page === "training" ? training() : items();
  add(app, body);
  document.documentElement.setAttribute("data-ready", "1");
})();
