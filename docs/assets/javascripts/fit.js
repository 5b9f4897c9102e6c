// Tables and text diagrams never run out of their column (tests/test_browser.py checks).
//
// Tables:
// 1. Identifiers in cells may break after "_", "/", "=", "," or a "." before a letter (never
//    inside a word or a number).
// 2. A table still wider than its column (many columns on a phone) is shown as one block per
//    row, each cell under its column's header (annotated.css, table[data-stacked]).

const BREAK_AFTER = /[_/=,]|\.(?=[A-Za-z])/g;

function addBreaks(table) {
  for (const code of table.querySelectorAll("code")) {
    if (code.dataset.breaks) continue;
    code.dataset.breaks = "1";
    const walker = document.createTreeWalker(code, NodeFilter.SHOW_TEXT);
    const texts = [];
    while (walker.nextNode()) texts.push(walker.currentNode);
    for (const text of texts) {
      const fragment = document.createDocumentFragment();
      let start = 0;
      for (const match of text.data.matchAll(BREAK_AFTER)) {
        const end = match.index + match[0].length;
        fragment.append(text.data.slice(start, end), document.createElement("wbr"));
        start = end;
      }
      if (start === 0) continue;
      fragment.append(text.data.slice(start));
      text.replaceWith(fragment);
    }
  }
}

function labelCells(table) {
  const headers = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
  for (const row of table.querySelectorAll("tbody tr")) {
    [...row.children].forEach((cell, i) => (cell.dataset.label = headers[i] ?? ""));
  }
}

function fitTables() {
  for (const table of document.querySelectorAll("article table")) {
    addBreaks(table);
    delete table.dataset.stacked;
    // Material wraps each table in a horizontally scrolling box: stack when that box scrolls.
    const box = table.closest(".md-typeset__scrollwrap") ?? table.parentElement;
    if (box.scrollWidth > box.clientWidth + 1) {
      labelCells(table);
      table.dataset.stacked = "";
    }
  }
}

// Text diagrams (```text blocks: data paths, token/label rows) are aligned by column, so they do
// not wrap like code: a wider one is shrunk to fit, down to MIN_DIAGRAM_SCALE, and only a
// diagram still too wide at that size wraps.
const MIN_DIAGRAM_SCALE = 0.6;

function fitDiagrams() {
  for (const code of document.querySelectorAll("article .language-text pre > code")) {
    code.style.fontSize = "";
    code.style.whiteSpace = "pre";
    if (code.scrollWidth <= code.clientWidth) continue;
    const size = parseFloat(getComputedStyle(code).fontSize);
    const scale = Math.max(MIN_DIAGRAM_SCALE, (code.clientWidth / code.scrollWidth) * 0.98);
    code.style.fontSize = `${(size * scale).toFixed(2)}px`;
    if (code.scrollWidth > code.clientWidth) code.style.whiteSpace = "pre-wrap";
  }
}

function fit() {
  fitTables();
  fitDiagrams();
}

document$.subscribe(() => {
  fit();
  document.fonts.ready.then(fit); // widths change once the fonts arrive
});

let fitResizing;
window.addEventListener("resize", () => {
  clearTimeout(fitResizing);
  fitResizing = setTimeout(fit, 100);
});
