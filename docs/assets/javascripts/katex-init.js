// Typeset the math that pymdownx.arithmatex (generic mode) wrapped in .arithmatex elements:
// inline math as \( ... \), display math as \[ ... \]. KaTeX and its auto-render extension
// are served from the site itself (docs/hooks/vendor_assets.py), never from a CDN.
// `document$` is Material's "page loaded" stream; subscribing also covers instant navigation.

// A display formula a little wider than its column (a phone, a narrow table cell) is shrunk
// to fit, down to this share of its size; a wider one must be broken over lines in the page
// (tests/test_browser.py fails on any formula still wider than its column).
const MIN_MATH_SCALE = 0.6;

function fitDisplayMath() {
  for (const box of document.querySelectorAll(".arithmatex .katex-display")) {
    const math = box.querySelector(":scope > .katex");
    if (!math) continue;
    math.style.fontSize = "";
    const available = box.closest(".arithmatex").clientWidth; // auto-render wraps it in a span
    if (math.scrollWidth > available) {
      const scale = Math.max(MIN_MATH_SCALE, (available / math.scrollWidth) * 0.98);
      math.style.fontSize = `${(1.21 * scale).toFixed(3)}em`; // KaTeX's own size is 1.21em
    }
  }
}

document$.subscribe(() => {
  for (const el of document.querySelectorAll(".arithmatex")) {
    // In a table cell, text-style fractions and their scripts shrink to ~7 px: typeset inline
    // math there in display style (full-size fractions) instead.
    if (el.closest("table") && el.textContent.startsWith("\\(")) {
      el.textContent = "\\(\\displaystyle " + el.textContent.slice(2);
    }
    renderMathInElement(el, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  }
  fitDisplayMath();
  // Widths change once KaTeX's fonts arrive: fit again then.
  document.fonts.ready.then(fitDisplayMath);
});

let resizing;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(fitDisplayMath, 100);
});
