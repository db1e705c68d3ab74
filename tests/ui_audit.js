// Accessibility and layout checks run in every page by tests/test_ui.py: unlabelled controls, missing landmarks,
// tables without a caption, unlabelled plots, text below WCAG AA contrast (4.5:1, 3:1 for large text), content wider
// than the window. Returns the list of problems found (empty when none).
const problems = [];
const named = (el) => (el.labels && el.labels.length) || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
for (const el of document.querySelectorAll("input, select, textarea")) {
  if (el.type !== "hidden" && !named(el)) problems.push("unlabelled control: " + el.outerHTML.slice(0, 100));
}
for (const tag of ["header", "nav", "main", "footer"]) if (!document.querySelector(tag)) problems.push("no <" + tag + ">");
if (document.querySelectorAll("h1").length !== 1) problems.push("h1 count: " + document.querySelectorAll("h1").length);
if (!document.documentElement.lang) problems.push("no lang");
for (const t of document.querySelectorAll("table")) if (!t.querySelector("caption")) problems.push("table without caption");
for (const s of document.querySelectorAll("svg")) if (s.getAttribute("role") !== "img" || !s.getAttribute("aria-label")) problems.push("unlabelled svg");
const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                             return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
const background = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
for (const el of document.querySelectorAll("body *")) {
  if (el.closest("svg") || !el.offsetParent && el.tagName !== "BODY") continue;
  const text = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!text) continue;
  const style = getComputedStyle(el);
  const fg = rgb(style.color).slice(0, 3), bg = background(el);
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  const ratio = (a + 0.05) / (b + 0.05);
  const large = parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.66 && Number(style.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5) && !el.disabled) problems.push("contrast " + ratio.toFixed(2) + ": " + el.tagName + " " + el.textContent.trim().slice(0, 40));
}
if (document.documentElement.scrollWidth > window.innerWidth + 1) problems.push("wider than the window: " + document.documentElement.scrollWidth + " > " + window.innerWidth);
return problems;
