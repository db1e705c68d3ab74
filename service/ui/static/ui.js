// metaml pages: thin clients of the /v1 API. No library, no request to any other origin.
// An API key typed into a page is kept in this tab's sessionStorage only, and sent as X-API-Key.
"use strict";

(() => {
  const KEY = "metaml.apiKey";
  const API = document.body.dataset.api || "";
  const UI = document.body.dataset.ui || "/ui";
  const LORA_LIKE = new Set(["lora", "qlora", "dora", "adalora", "rslora"]);
  const MAX_ROWS_SHOWN = 2000;

  // -- keys ----------------------------------------------------------------------------------------------------------
  const storedKey = () => {
    try { return sessionStorage.getItem(KEY) || ""; } catch (e) { return ""; }
  };
  const storeKey = (key) => {
    try { if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY); } catch (e) { /* private mode */ }
  };
  /** The key of a form's key field (saved for the tab when typed), else the tab's saved key. */
  const keyOf = (form) => {
    const input = form ? form.querySelector("[data-api-key]") : null;
    const typed = input ? input.value.trim() : "";
    if (typed) storeKey(typed);
    return typed || storedKey();
  };
  const bindKeyFields = (root) => {
    root.querySelectorAll("[data-api-key]").forEach((input) => { if (!input.value) input.value = storedKey(); });
    root.querySelectorAll("[data-forget-key]").forEach((button) => button.addEventListener("click", () => {
      storeKey("");
      root.querySelectorAll("[data-api-key]").forEach((input) => { input.value = ""; });
    }));
  };

  // -- the API -------------------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status; this.code = code; this.details = details;
    }
  }
  /** Call the API; the parsed JSON answer, or an ApiError with the answer's error code and message. */
  async function api(path, { method = "GET", json, form, key } = {}) {
    const headers = { Accept: "application/json" };
    if (key) headers["X-API-Key"] = key;
    let body;
    if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
    else if (form) body = form;
    let response;
    try {
      response = await fetch(API + path, { method, headers, body, credentials: "same-origin" });
    } catch (e) {
      throw new ApiError(0, "network_error", "the server did not answer: " + e.message);
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!response.ok) {
      const err = data && data.error;
      throw new ApiError(response.status, err ? err.code : "error", err ? err.message : "HTTP " + response.status,
                         err ? err.details : null);
    }
    return data;
  }
  const describeError = (e) => {
    if (!(e instanceof ApiError)) return String(e && e.message ? e.message : e);
    let text = (e.status ? e.status + " " : "") + e.code + ": " + e.message;
    if (Array.isArray(e.details) && e.details.length > 1) {
      text += "\n" + e.details.slice(0, 10).map((d) => "• " + (d.loc || []).join(".") + ": " + d.msg).join("\n");
    }
    return text;
  };
  const showError = (node, e) => {
    if (!node) return;
    if (e) { node.textContent = describeError(e); node.hidden = false; } else { node.textContent = ""; node.hidden = true; }
  };

  // -- DOM helpers ---------------------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v; else if (k === "className") node.className = v; else node.setAttribute(k, v);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const fmt = (v, digits = 4) => {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return v.toLocaleString("en-US");
      return Number(v.toPrecision(digits)).toString();
    }
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  };
  const duration = (s) => {
    if (s === null || s === undefined) return "";
    if (s < 120) return fmt(s, 3) + " s";
    if (s < 7200) return fmt(s / 60, 3) + " min";
    return fmt(s / 3600, 3) + " h";
  };
  const isNumeric = (v) => typeof v === "number";
  /**
   * A table: columns are {key, label, num, cell(row) -> Node|string}; rows are objects (or arrays with numeric keys).
   */
  function table(columns, rows, caption, rowClass) {
    const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", className: c.num ? "num" : null, text: c.label })));
    const body = el("tbody");
    rows.forEach((row) => {
      const tr = el("tr", { className: rowClass ? rowClass(row) : null });
      columns.forEach((c) => {
        const value = c.cell ? c.cell(row) : row[c.key];
        const td = el("td", { className: [c.num ? "num" : "", c.className || ""].join(" ").trim() || null });
        td.append(value instanceof Node ? value : document.createTextNode(c.cell ? String(value ?? "") : fmt(value)));
        tr.append(td);
      });
      body.append(tr);
    });
    return el("table", { className: "data" }, caption ? el("caption", { text: caption }) : null, el("thead", {}, head), body);
  }
  /** CSV text (RFC 4180); text cells that a spreadsheet would read as a formula get a leading apostrophe. */
  function toCsv(header, rows) {
    const cell = (v) => {
      if (v === null || v === undefined) return "";
      let s = typeof v === "object" ? JSON.stringify(v) : String(v);
      if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
      return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
    };
    return [header, ...rows].map((r) => r.map(cell).join(",")).join("\r\n") + "\r\n";
  }
  function setDownload(link, text, type) {
    if (link.dataset.url) URL.revokeObjectURL(link.dataset.url);
    const url = URL.createObjectURL(new Blob([text], { type }));
    link.dataset.url = url;
    link.href = url;
  }
  const runLink = (id) => id ? el("a", { href: UI + "/runs/" + id, text: id.slice(0, 8), "aria-label": "run " + id }) : "";
  const busy = (form, on) => form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = on; });

  // -- pages that need a read key ------------------------------------------------------------------------------------
  /** Fetch this page again with the key and show it in place (the server rendered a key form instead). */
  async function loadWithKey(key) {
    const main = document.querySelector("main");
    const response = await fetch(location.href, { headers: { "X-API-Key": key, Accept: "text/html" },
                                                  credentials: "same-origin" });
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.querySelector("main");
    if (!fresh) return;
    main.replaceWith(fresh);
    document.title = doc.title;
    if (response.ok) {
      init(fresh);
    } else {
      storeKey("");
      bindGate(fresh);
    }
  }
  function bindGate(root) {
    const form = root.querySelector("#gate-form");
    bindKeyFields(root);
    if (!form) return;
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = keyOf(form);
      if (key) loadWithKey(key);
    });
  }

  // -- overview: the served model ------------------------------------------------------------------------------------
  async function initOverview(root) {
    const section = root.querySelector("#served-model");
    if (!section) return;
    const status = section.querySelector("[data-model-status]");
    try {
      const answer = await api("/v1/models", { key: storedKey() });
      const loaded = answer.loaded;
      if (!loaded) {
        status.textContent = "No meta-model is served: train one (metaml train) and promote it (metaml models promote N).";
      } else {
        status.textContent = loaded.version !== null
          ? "Version " + loaded.version + " of " + answer.registered_name + " is served."
          : "A local model artifact is served.";
        const facts = section.querySelector("[data-model-facts]");
        const pairs = [["version", loaded.version], ["source", loaded.source], ["loaded at", loaded.loaded_at],
                       ["created at", loaded.created_at], ["training runs", loaded.n_train_runs],
                       ["knowledge-base snapshot", loaded.kb_snapshot],
                       ["interval coverage", loaded.interval_level !== null ? fmt(100 * loaded.interval_level, 3) + "%" : null]];
        pairs.filter(([, v]) => v !== null && v !== undefined)
          .forEach(([k, v]) => facts.append(el("div", {}, el("dt", { text: k }), el("dd", { text: fmt(v) }))));
        facts.hidden = false;
      }
      const versions = answer.versions || [];
      if (versions.length) {
        const names = [...new Set(versions.flatMap((v) => Object.keys(v.metrics || {})))].sort();
        const columns = [{ key: "version", label: "version", num: true },
                         { label: "aliases", cell: (v) => (v.aliases || []).join(", ") },
                         { label: "served", cell: (v) => v.loaded ? "yes" : "" },
                         { key: "created_at", label: "created" },
                         ...names.map((n) => ({ label: n, num: true, cell: (v) => fmt((v.metrics || {})[n]) }))];
        const wrap = section.querySelector("[data-model-metrics]");
        wrap.append(table(columns, versions, "Registered versions and their evaluation figures"));
        wrap.hidden = false;
      }
    } catch (e) {
      status.textContent = "The model registry could not be read: " + describeError(e);
    }
  }

  // -- recommendations (dataset page and advisor) --------------------------------------------------------------------
  const methodLabel = (m) => {
    const params = Object.entries(m).filter(([k, v]) => !["name", "kind", "config"].includes(k) && v !== null && v !== undefined);
    return m.name + (params.length ? "(" + params.map(([k, v]) => k + "=" + v).join(", ") + ")" : "");
  };
  function rankedTable(answer) {
    const hp = (r, k) => (r.config.hparams || {})[k];
    const columns = [
      { key: "rank", label: "rank", num: true },
      { label: "model", cell: (r) => r.config.model.id },
      { label: "method", cell: (r) => methodLabel(r.config.method) },
      { label: "learning rate", num: true, cell: (r) => fmt(hp(r, "learning_rate"), 3) },
      { label: "batch", num: true, cell: (r) => fmt(hp(r, "batch_size")) },
      { label: "epochs", num: true, cell: (r) => fmt(hp(r, "epochs")) },
      { label: "predicted score", num: true, className: "predicted", cell: (r) => fmt(r.score, 4) },
      { label: "80% interval", num: true, cell: (r) => fmt(r.points_lo / 100, 3) + " – " + fmt(r.points_hi / 100, 3) },
      { label: "training time", num: true, cell: (r) => duration(r.runtime_s) },
      { label: "failure risk", num: true, cell: (r) => fmt(100 * r.p_fail, 2) + "%" },
    ];
    const level = answer.model && answer.model.interval_level ? fmt(100 * answer.model.interval_level, 2) + "%" : "80%";
    columns[7].label = level + " interval";
    return table(columns, answer.ranked, "Ranked by predicted standing, discounted by the failure risk");
  }

  async function initDataset(root) {
    const section = root.querySelector("#recommendations[data-request]");
    if (!section) return;
    const status = section.querySelector("[data-rec-status]");
    try {
      const answer = await api("/v1/recommend", { method: "POST", json: JSON.parse(section.dataset.request), key: storedKey() });
      section.querySelector("[data-rec-table]").append(rankedTable(answer));
      scrollables(section);
      status.textContent = answer.n_candidates.toLocaleString("en-US") + " candidates scored by meta-model version "
        + (answer.model.version ?? "(local)") + " in " + fmt(answer.model_ms, 3) + " ms.";
    } catch (e) {
      status.textContent = "No recommendation: " + describeError(e);
    }
  }

  // -- upload --------------------------------------------------------------------------------------------------------
  function initUpload(root) {
    const form = root.querySelector("#upload-form");
    if (!form) return;
    const input = form.querySelector("#upload-file");
    const zone = form.querySelector("#drop-zone");
    const name = form.querySelector("#drop-name");
    const error = form.querySelector("#upload-error");
    const showName = () => {
      const f = input.files && input.files[0];
      name.textContent = f ? f.name + " (" + f.size.toLocaleString("en-US") + " bytes)" : "No file chosen.";
    };
    input.addEventListener("change", showName);
    ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (ev) => { ev.preventDefault(); zone.classList.add("over"); }));
    ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, () => zone.classList.remove("over")));
    zone.addEventListener("drop", (ev) => {
      ev.preventDefault();
      if (ev.dataTransfer && ev.dataTransfer.files.length) { input.files = ev.dataTransfer.files; showName(); }
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      showError(error, null);
      const key = keyOf(form);
      const file = input.files && input.files[0];
      if (!key) return showError(error, "An API key with the write scope is needed to upload.");
      if (!file) return showError(error, "Choose or drop a file first.");
      const body = new FormData();
      body.append("file", file, file.name);
      const format = form.querySelector("#upload-format").value;
      if (format) body.append("format", format);
      busy(form, true);
      try {
        renderUpload(root, await api("/v1/runs", { method: "POST", form: body, key }), file.name);
      } catch (e) {
        showError(error, e);
      } finally {
        busy(form, false);
      }
    });
  }
  function renderUpload(root, answer, filename) {
    const section = root.querySelector("#upload-result");
    const totals = section.querySelector("[data-totals]");
    totals.replaceChildren(
      el("li", {}, el("span", { className: "figure", text: fmt(answer.total) }), " records"),
      el("li", {}, el("span", { className: "figure", "data-count": "accepted", text: fmt(answer.accepted) }), " stored"),
      el("li", {}, el("span", { className: "figure", "data-count": "duplicate", text: fmt(answer.duplicates) }), " duplicates"),
      el("li", {}, el("span", { className: "figure", "data-count": "rejected", text: fmt(answer.rejected) }), " rejected"),
      el("li", {}, "uploader ", el("strong", { text: answer.uploader })));
    const fields = ["index", "locator", "status", "run_id", "uri", "field", "reason"];
    setDownload(section.querySelector("#upload-csv"),
                toCsv(fields, answer.records.map((r) => fields.map((f) => r[f]))), "text/csv");
    section.querySelector("#upload-csv").setAttribute("download", filename.replace(/\.[^.]*$/, "") + "-report.csv");
    const shown = answer.records.slice(0, MAX_ROWS_SHOWN);
    const columns = [{ key: "index", label: "#", num: true }, { key: "locator", label: "where" },
                     { key: "status", label: "status", className: "status" },
                     { label: "run", cell: (r) => r.status === "rejected" ? "" : runLink(r.run_id) },
                     { key: "field", label: "field" }, { key: "reason", label: "reason" }];
    const caption = shown.length < answer.records.length
      ? "The first " + shown.length + " of " + answer.records.length + " records (the CSV holds them all)"
      : "Every record of " + filename + ", in reading order";
    section.querySelector("[data-report-table]").replaceChildren(
      table(columns, shown, caption, (r) => "status-" + r.status));
    section.hidden = false;
    scrollables(section);
    section.querySelector("h2").focus();
  }

  // -- advisor -------------------------------------------------------------------------------------------------------
  const list = (text, parse) => text.split(",").map((s) => s.trim()).filter(Boolean).map(parse);
  const number = (s) => {
    const v = Number(s);
    if (!Number.isFinite(v)) throw new Error("not a number: " + s);
    return v;
  };
  /** A Python literal of a JSON value: on one line when it fits in 100 columns, else one item per line. */
  function py(value, indent = "") {
    if (value === null || value === undefined) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
    const items = Array.isArray(value) ? value.map((v) => [null, v]) : Object.entries(value);
    const item = ([k, v], ind) => (k === null ? "" : JSON.stringify(k) + ": ") + py(v, ind);
    const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
    const flat = open + items.map((kv) => item(kv, "")).join(", ") + close;
    if (!items.length || (indent.length + flat.length <= 100 && !flat.includes("\n"))) return flat;
    const inner = indent + "    ";
    return open + "\n" + items.map((kv) => inner + item(kv, inner)).join(",\n") + ",\n" + indent + close;
  }
  function snippets(request, answer) {
    const space = request.space;
    const trials = (answer.priors.optuna || {}).enqueue_trials || [];
    const points = (answer.priors.ray_tune || {}).points_to_evaluate || trials;
    const dist = (answer.priors.optuna || {}).distributions || {};
    const labels = dist.method && dist.method.values ? dist.method.values : space.methods.map(methodLabel);
    const models = space.models.map((m) => m.id);
    const dataset = request.dataset.name ? JSON.stringify(request.dataset.name) : py({ meta: answer.task.meta });
    const suggest = [`        "model": trial.suggest_categorical("model", ${py(models)}),`,
                     `        "method": trial.suggest_categorical("method", ${py(labels)}),`];
    const tune = [`    "model": tune.choice(${py(models)}),`, `    "method": tune.choice(${py(labels)}),`];
    for (const [name, choice] of Object.entries(space.hparams || {})) {
      if (Array.isArray(choice)) {
        suggest.push(`        ${JSON.stringify(name)}: trial.suggest_categorical(${JSON.stringify(name)}, ${py(choice)}),`);
        tune.push(`    ${JSON.stringify(name)}: tune.choice(${py(choice)}),`);
      } else {
        suggest.push(`        ${JSON.stringify(name)}: trial.suggest_float(${JSON.stringify(name)}, ${choice.low}, ${choice.high}${choice.log ? ", log=True" : ""}),`);
        tune.push(`    ${JSON.stringify(name)}: tune.${choice.log ? "loguniform" : "uniform"}(${choice.low}, ${choice.high}),`);
      }
    }
    const origin = location.origin + API;
    const optuna = [
      "import optuna",
      "from metaml_client.optuna import config_from_params",
      "",
      "# The search space sent to /v1/recommend and the configurations it ranked first (best first).",
      "SPACE = " + py(space),
      "RECOMMENDED = " + py(trials),
      "",
      "",
      "def objective(trial: optuna.Trial) -> float:",
      "    params = {",
      ...suggest,
      "    }",
      "    config = config_from_params(params, SPACE)  # {'model': ..., 'method': ..., 'hparams': ...}",
      "    return train_and_evaluate(config)  # your fine-tuning run: the score on the normalized scale",
      "",
      "",
      "study = optuna.create_study(direction=\"maximize\")",
      "for params in RECOMMENDED:",
      "    study.enqueue_trial(params)",
      "study.optimize(objective, n_trials=" + Math.max(20, 2 * trials.length) + ")",
      "",
      "# The same, asked live (and with unpromising trials skipped: metaml_client.optuna.SkipUnpromising):",
      "#   from metaml_client import Client",
      "#   from metaml_client.optuna import warm_start",
      `#   warm_start(study, Client(${JSON.stringify(origin)}, api_key=KEY), ${py(request.task)}, ${dataset}, SPACE, budget=${trials.length}, source=${JSON.stringify(request.source)})`,
    ].join("\n");
    const ray = [
      "from ray import tune",
      "from ray.tune.search.basic_variant import BasicVariantGenerator",
      "from metaml_client.optuna import config_from_params",
      "",
      "SPACE = " + py(space),
      "RECOMMENDED = " + py(points),
      "",
      "",
      "def trainable(params: dict) -> dict:",
      "    config = config_from_params(params, SPACE)",
      "    return {\"score\": train_and_evaluate(config)}  # your fine-tuning run",
      "",
      "",
      "param_space = {",
      ...tune,
      "}",
      "tuner = tune.Tuner(",
      "    trainable,",
      "    param_space=param_space,",
      "    tune_config=tune.TuneConfig(metric=\"score\", mode=\"max\", num_samples=" + Math.max(20, 2 * points.length) + ",",
      "                                search_alg=BasicVariantGenerator(points_to_evaluate=RECOMMENDED)),",
      ")",
      "results = tuner.fit()",
      "",
      "# The same, asked live: metaml_client.ray_tune.warm_start(client, TASK, DATASET, SPACE, budget) returns",
      "# points_to_evaluate and a matching param_space.",
    ].join("\n");
    return { optuna, ray };
  }
  function initAdvisor(root) {
    const form = root.querySelector("#advisor-form");
    if (!form) return;
    const error = form.querySelector("#advisor-error");
    const mode = () => form.querySelector("input[name=dataset_mode]:checked").value;
    const showMode = () => form.querySelectorAll("[data-mode]").forEach((f) => { f.hidden = f.dataset.mode !== mode(); });
    form.querySelectorAll("input[name=dataset_mode]").forEach((r) => r.addEventListener("change", showMode));
    showMode();
    root.querySelectorAll("[data-copy]").forEach((b) => b.addEventListener("click", async () => {
      const code = root.querySelector("#" + b.dataset.copy).textContent;
      try { await navigator.clipboard.writeText(code); b.textContent = "Copied"; } catch (e) { b.textContent = "Select and copy"; }
    }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      showError(error, null);
      const key = keyOf(form);
      let request;
      busy(form, true);
      try {
        request = await advisorRequest(form, mode(), key);
        const answer = await api("/v1/recommend", { method: "POST", json: request, key });
        renderAdvice(root, request, answer);
      } catch (e) {
        showError(error, e);
      } finally {
        busy(form, false);
      }
    });
  }
  async function advisorRequest(form, how, key) {
    const value = (sel) => form.querySelector(sel).value.trim();
    let dataset;
    if (how === "known") {
      dataset = { name: value("#adv-dataset") };
    } else if (how === "meta") {
      let meta;
      try { meta = JSON.parse(value("#adv-meta")); } catch (e) { throw new Error("The meta-features are not valid JSON: " + e.message); }
      if (!meta || typeof meta !== "object" || Array.isArray(meta)) throw new Error("The meta-features must be a JSON object.");
      dataset = { meta };
    } else {
      const file = form.querySelector("#adv-sample").files[0];
      if (!file) throw new Error("Choose a sample file of the dataset first.");
      const body = new FormData();
      body.append("file", file, file.name);
      const described = await api("/v1/datasets/describe", { method: "POST", form: body, key });
      const metaList = form.querySelector("[data-sample-meta]");
      metaList.replaceChildren(...Object.entries(described.meta).filter(([, v]) => v !== null)
        .map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: fmt(v) }))));
      metaList.hidden = false;
      dataset = { meta: Object.fromEntries(Object.entries(described.meta).filter(([, v]) => v !== null)) };
    }
    const models = [...form.querySelectorAll("input[name=model]:checked")].map((i) => i.value)
      .concat(list(value("#adv-more-models"), String));
    if (!models.length) throw new Error("Choose at least one model.");
    const ranks = list(value("#adv-lora-r"), number);
    const methods = [];
    for (const name of [...form.querySelectorAll("input[name=method]:checked")].map((i) => i.value)) {
      if (LORA_LIKE.has(name) && ranks.length) ranks.forEach((r) => methods.push({ name, lora_r: r }));
      else methods.push({ name });
    }
    if (!methods.length) throw new Error("Choose at least one method.");
    const hparams = { learning_rate: { low: number(value("#adv-lr-low")), high: number(value("#adv-lr-high")), log: true } };
    const batches = list(value("#adv-batch"), number);
    const epochs = list(value("#adv-epochs"), number);
    if (batches.length) hparams.batch_size = batches;
    if (epochs.length) hparams.epochs = epochs;
    return {
      task: { primary_metric: value("#adv-metric") || "accuracy" },
      dataset, source: value("#adv-source") || "upload",
      space: { models: models.map((id) => ({ id })), methods, hparams },
      budget: number(value("#adv-budget")),
    };
  }
  function renderAdvice(root, request, answer) {
    const section = root.querySelector("#advisor-result");
    section.querySelector("[data-adv-table]").replaceChildren(rankedTable(answer));
    section.querySelector("[data-adv-status]").textContent = answer.n_candidates.toLocaleString("en-US")
      + " candidates enumerated" + (answer.truncated ? " (a sample of a larger grid)" : "") + " and scored by meta-model version "
      + (answer.model.version ?? "(local)") + "; meta-features from " + answer.task.meta_from.join(", ") + ".";
    const code = snippets(request, answer);
    section.querySelector("#optuna-snippet").textContent = code.optuna;
    section.querySelector("#ray-snippet").textContent = code.ray;
    section.hidden = false;
    scrollables(section);
    section.querySelector("h2").focus();
  }

  // -- SQL -----------------------------------------------------------------------------------------------------------
  function initSql(root) {
    const form = root.querySelector("#sql-form");
    if (!form) return;
    const error = form.querySelector("#sql-error");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      showError(error, null);
      const key = keyOf(form);
      if (!key) return showError(error, "An API key with the analyst scope is needed to run SQL.");
      const maxRows = Number(form.querySelector("#sql-max-rows").value) || undefined;
      busy(form, true);
      try {
        const answer = await api("/v1/sql", { method: "POST", key,
                                               json: { query: form.querySelector("#sql-query").value, max_rows: maxRows } });
        const section = root.querySelector("#sql-result");
        const names = answer.columns.map((c) => c.name);
        const columns = answer.columns.map((c, i) => ({ label: c.name, num: /int|float|double|decimal/i.test(c.type),
                                                        cell: (row) => fmt(row[i]) }));
        section.querySelector("[data-sql-status]").textContent = answer.row_count.toLocaleString("en-US")
          + (answer.row_count === 1 ? " row" : " rows")
          + (answer.truncated ? " (truncated: the query has more)" : "")
          + (answer.row_count > MAX_ROWS_SHOWN ? "; the first " + MAX_ROWS_SHOWN + " are shown, the CSV holds them all" : "") + ".";
        section.querySelector("[data-sql-table]").replaceChildren(
          table(columns, answer.rows.slice(0, MAX_ROWS_SHOWN), "Columns: " + answer.columns.map((c) => c.name + " " + c.type).join(", ")));
        setDownload(section.querySelector("#sql-csv"), toCsv(names, answer.rows), "text/csv");
        section.hidden = false;
        scrollables(section);
        section.querySelector("h2").focus();
      } catch (e) {
        showError(error, e);
      } finally {
        busy(form, false);
      }
    });
  }

  // -- datasets: filter as you type ----------------------------------------------------------------------------------
  function initDatasets(root) {
    const input = root.querySelector("[data-filter-table]");
    if (!input) return;
    const rows = [...root.querySelectorAll("#" + input.dataset.filterTable + " tbody tr[data-name]")];
    const status = root.querySelector("[data-filter-status]");
    input.addEventListener("input", () => {
      const q = input.value.trim().toLowerCase();
      let shown = 0;
      rows.forEach((tr) => { tr.hidden = !!q && !tr.dataset.name.includes(q); if (!tr.hidden) shown += 1; });
      status.textContent = shown.toLocaleString("en-US") + " datasets" + (q ? " whose name contains “" + input.value.trim() + "”" : "") + ".";
    });
  }

  const PAGES = { overview: initOverview, dataset: initDataset, datasets: initDatasets, upload: initUpload,
                  advisor: initAdvisor, sql: initSql };
  /** Tables wider than their box scroll inside it: make that box reachable and named for the keyboard. */
  function scrollables(root) {
    root.querySelectorAll(".table-wrap").forEach((wrap) => {
      if (wrap.scrollWidth <= wrap.clientWidth || wrap.hasAttribute("tabindex")) return;
      const caption = wrap.querySelector("caption");
      wrap.setAttribute("tabindex", "0");
      wrap.setAttribute("role", "region");
      wrap.setAttribute("aria-label", caption ? caption.textContent : "table");
    });
  }
  window.addEventListener("resize", () => scrollables(document));

  function init(root) {
    bindKeyFields(root);
    scrollables(root);
    const page = PAGES[document.body.dataset.page];
    if (page) page(root);
  }

  const main = document.querySelector("main");
  if (main.dataset.needsKey) {
    bindGate(main);
    if (storedKey()) loadWithKey(storedKey());
  } else {
    init(main);
  }
})();
