// Tables never run out of their column.
// 1. Identifiers in cells may break after "_", ".", "/", "=" or "," (never inside a word).
// 2. A table still wider than its column (many columns on a phone) is shown as one block per
//    row, each cell under its column's header (annotated.css, table[data-stacked]).

const BREAK_AFTER = /([_./=,])/g;

function addBreaks(table) {
  for (const code of table.querySelectorAll("code")) {
    if (code.dataset.breaks) continue;
    code.dataset.breaks = "1";
    const walker = document.createTreeWalker(code, NodeFilter.SHOW_TEXT);
    const texts = [];
    while (walker.nextNode()) texts.push(walker.currentNode);
    for (const text of texts) {
      const parts = text.data.split(BREAK_AFTER);
      if (parts.length === 1) continue;
      const fragment = document.createDocumentFragment();
      for (const part of parts) {
        fragment.append(part);
        if (BREAK_AFTER.test(part)) fragment.append(document.createElement("wbr"));
        BREAK_AFTER.lastIndex = 0;
      }
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
