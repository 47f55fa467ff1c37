() => {
  const problems = [];
  const box = (el) => el.getBoundingClientRect();
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.getAttribute("class") ? "." + el.getAttribute("class").split(" ")[0] : "");
  const doc = document.documentElement;
  if (doc.scrollWidth > doc.clientWidth + 1) problems.push(`page scrolls sideways (${doc.scrollWidth} > ${doc.clientWidth})`);
  const panels = [...document.querySelectorAll(".vv-panel, .vv-card")];
  panels.forEach((a, i) => panels.slice(i + 1).forEach((b) => {
    const p = box(a), q = box(b);
    if (p.left < q.right - 1 && q.left < p.right - 1 && p.top < q.bottom - 1 && q.top < p.bottom - 1)
      problems.push(`${name(a)} overlaps ${name(b)}`);
  }));
  document.querySelectorAll("svg.vv-chart").forEach((svg) => {
    const chart = svg.getAttribute("aria-label");
    const s = box(svg), panel = box(svg.closest(".vv-panel"));
    if (s.left < panel.left - 1 || s.right > panel.right + 1 || s.top < panel.top - 1 || s.bottom > panel.bottom + 1)
      problems.push(`chart "${chart}" overflows its panel`);
    const texts = [...svg.querySelectorAll("text")].map(box);
    texts.forEach((t, i) => {
      if (t.left < s.left - 1 || t.right > s.right + 1 || t.top < s.top - 1 || t.bottom > s.bottom + 1)
        problems.push(`chart "${chart}": text ${i} outside the chart`);
      texts.slice(i + 1).forEach((u) => {
        if (t.left < u.right - 1 && u.left < t.right - 1 && t.top < u.bottom - 1 && u.top < t.bottom - 1)
          problems.push(`chart "${chart}": labels overlap`);
      });
    });
  });
  const content = document.getElementById("content") || document.body;
  const contentBox = box(content);
  document.querySelectorAll("#content table").forEach((table) => {
    let scroller = null;
    for (let el = table.parentElement; el && el !== content.parentElement; el = el.parentElement) {
      if (["auto", "scroll"].includes(getComputedStyle(el).overflowX)) { scroller = el; break; }
    }
    const t = box(table);
    if (scroller) {
      if (box(scroller).right > doc.clientWidth + 1) problems.push(`${name(scroller)} runs off the page`);
    } else if (t.right > contentBox.right + 1) {
      problems.push(`table ${name(table)} is clipped (${Math.round(t.right)} > ${Math.round(contentBox.right)})`);
    }
  });
  // Meetings and callbacks: the link to their call must be in view, not scrolled off to the side.
  document.querySelectorAll("#result_list td.field-call_link").forEach((td) => {
    const results = td.closest(".results") || content;
    if (box(td).right > box(results).right + 1) problems.push("the Call column is scrolled out of view");
  });
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c;
    }
    return [255, 255, 255];
  };
  const contrast = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const check = (selector, colour, minimum) => document.querySelectorAll(selector).forEach((el) => {
    const ratio = contrast(rgb(colour(el)), background(el.closest("svg") ? el.closest("svg").parentElement : el));
    if (ratio < minimum) problems.push(`${selector} contrast ${ratio.toFixed(1)} < ${minimum}`);
  });
  check(".vv-text, .vv-meta, .vv-timings, .vv-badge, .vv-diff ins, .vv-diff del, .vv-diff pre, .vv-card .l, #result_list td",
        (el) => getComputedStyle(el).color, 4.5);
  check("svg.vv-chart text", (el) => getComputedStyle(el).fill, 3);
  return [...new Set(problems)];
}
