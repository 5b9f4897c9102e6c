// Typeset the math that pymdownx.arithmatex (generic mode) wrapped in .arithmatex elements:
// inline math as \( ... \), display math as \[ ... \]. KaTeX and its auto-render extension
// are served from the site itself (docs/hooks/vendor_assets.py), never from a CDN.
// `document$` is Material's "page loaded" stream; subscribing also covers instant navigation.
document$.subscribe(() => {
  for (const el of document.querySelectorAll(".arithmatex")) {
    renderMathInElement(el, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  }
});
