// dermscreen pages: the three interactions that need script. Everything works without it too
// (plain file input, a refreshing batch page, server order of the results).
"use strict";

// Drag and drop onto the upload box: dropped files go into the form's file input.
function initDropzones() {
  document.querySelectorAll("[data-dropzone]").forEach((zone) => {
    const input = zone.querySelector("input[type=file]");
    const list = zone.querySelector(".file-list");
    const show = () => {
      list.replaceChildren(...Array.from(input.files, (file) => {
        const item = document.createElement("li");
        item.textContent = `${file.name} (${Math.ceil(file.size / 1024)} KB)`;
        return item;
      }));
    };
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    }));
    ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, () => zone.classList.remove("dragging")));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      input.files = event.dataTransfer.files;
      show();
    });
  });
}

// Batch progress: poll the JSON endpoint (it reads the database counters) until the batch ends.
function initProgress() {
  const box = document.querySelector("[data-progress-url]");
  if (!box) return;
  const bar = box.querySelector("progress");
  const text = box.querySelector("[data-progress-text]");
  const poll = async () => {
    const response = await fetch(box.dataset.progressUrl, { headers: { Accept: "application/json" } });
    if (!response.ok) return setTimeout(poll, 3000);
    const summary = await response.json();
    const counts = summary.counts;
    bar.max = Math.max(counts.total, 1);
    const finished = counts.done + counts.failed + counts.unassessable;
    const unassessable = counts.unassessable ? `${counts.unassessable} cannot be assessed, ` : "";
    bar.value = finished;
    text.textContent = `${summary.status}: ${finished} of ${counts.total} images ` +
      `(${counts.failed} failed, ${unassessable}${counts.flagged} flagged)`;
    if (summary.status === "done" || summary.status === "failed") {
      window.location.reload();
    } else {
      setTimeout(poll, 1000);
    }
  };
  setTimeout(poll, 500);
}

// Sortable tables: header buttons (and the select shown on narrow screens) sort the rows by each
// cell's data-sort value.
function sortTable(table, column, direction) {
  const body = table.tBodies[0];
  const type = table.tHead.rows[0].cells[column].dataset.type || "text";
  const key = (row) => {
    const cell = row.cells[column];
    const raw = cell.dataset.sort ?? cell.textContent.trim();
    return type === "number" ? (raw === "" ? -Infinity : Number(raw)) : raw.toLowerCase();
  };
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    return (x < y ? -1 : x > y ? 1 : 0) * (direction === "ascending" ? 1 : -1);
  });
  body.append(...rows);
  Array.from(table.tHead.rows[0].cells).forEach((cell, index) => {
    if (index === column) cell.setAttribute("aria-sort", direction);
    else cell.removeAttribute("aria-sort");
  });
}

function initSorting() {
  document.querySelectorAll("table.sortable").forEach((table) => {
    Array.from(table.tHead.rows[0].cells).forEach((cell, column) => {
      const button = cell.querySelector("button.sort");
      if (!button) return;
      button.addEventListener("click", () => {
        const next = cell.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
        sortTable(table, column, next);
      });
    });
    const select = document.querySelector(`select[data-sorts="${table.id}"]`);
    if (select) {
      select.addEventListener("change", () => {
        const [column, direction] = select.value.split(":");
        sortTable(table, Number(column), direction);
      });
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  initDropzones();
  initProgress();
  initSorting();
});
