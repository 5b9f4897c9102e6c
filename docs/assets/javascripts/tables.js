// Tables never run out of their column.
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
    const column = table.closest(".md-typeset__table, .docco-doc, td") ?? table.parentElement;
    if (table.scrollWidth > column.clientWidth + 1) {
      labelCells(table);
      table.dataset.stacked = "";
    }
  }
}

document$.subscribe(fitTables);

let tablesResizing;
window.addEventListener("resize", () => {
  clearTimeout(tablesResizing);
  tablesResizing = setTimeout(fitTables, 100);
});
