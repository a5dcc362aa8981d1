/* Explorers on the static site (transformer_challenges.explorers): each
 * <div class="tc-explorer"> holds a JSON spec written by the library. This file builds its form,
 * evaluates the outputs (JavaScript generated from the library's SymPy formulas by SymPy's
 * printer, or frames the library precomputed) and draws the figure with Plotly, served from the
 * site. Nothing here knows a formula: it only wires inputs to generated expressions. */
(function () {
  "use strict";

  // The same formats as transformer_challenges.explorers.format_value.
  function tcFormat(value, fmt, digits) {
    if (!isFinite(value)) return "\u2014";
    switch (fmt) {
      case "bytes": return (value / 1e9).toFixed(digits) + " GB";
      case "count": return Math.round(value).toLocaleString("en-US");
      case "sci": {
        const [m, e] = value.toExponential(digits).split("e");
        return m + "e" + parseInt(e, 10);
      }
      case "percent": return (100 * value).toFixed(digits) + "%";
      case "days": return (value / 86400).toFixed(digits) + " days";
      default: return value.toFixed(digits);
    }
  }
  window.tcFormat = tcFormat;

  function cssVar(name, fallback) {
    const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  function plotTheme() {
    const dark = document.documentElement.dataset.theme === "dark";
    const fg = cssVar("--pst-color-text-base", dark ? "#ced6dd" : "#222832");
    return {
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: fg, size: 12 },
      xaxis: { gridcolor: dark ? "#444" : "#ddd", zerolinecolor: dark ? "#666" : "#bbb" },
      yaxis: { gridcolor: dark ? "#444" : "#ddd", zerolinecolor: dark ? "#666" : "#bbb" },
      margin: { l: 60, r: 20, t: 30, b: 45 }, height: 320,
      legend: { orientation: "h", y: -0.25 },
    };
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function build(root) {
    const spec = JSON.parse(root.querySelector("script.tc-explorer-spec").textContent);
    const fallback = root.querySelector(".tc-explorer-fallback");
    if (fallback) fallback.remove();
    const id = spec.id;
    const names = spec.controls.map((c) => c.name);
    const fns = {};
    spec.outputs.forEach((o) => {
      // eslint-disable-next-line no-new-func
      if (o.js !== undefined) fns[o.name] = new Function(...names, "return (" + o.js + ");");
    });
    // A frame key is the controls' values as the library wrote them (explorers._key).
    const keyOf = (x) => (Number.isInteger(x) ? String(x) : String(x));

    const checks = (spec.constraints || []).map(([js, message]) => [
      // eslint-disable-next-line no-new-func
      new Function(...names, "return (" + js + ");"), message]);
    const curves = spec.plots.filter((p) => p.type === "curve").map((p) =>
      // eslint-disable-next-line no-new-func
      new Function(...names, p.x, "return (" + p.y + ");"));

    const form = el("form", { class: "tc-explorer-form", "aria-label": spec.title });
    form.addEventListener("submit", (e) => e.preventDefault());
    const inputs = {};
    if (Object.keys(spec.presets).length) {
      const row = el("div", { class: "tc-row tc-presets" });
      const label = el("label", { for: `${id}-preset` }, "Preset");
      const select = el("select", { id: `${id}-preset`, "data-preset": "1" });
      select.append(el("option", { value: "" }, "(custom)"));
      Object.keys(spec.presets).forEach((p) => select.append(el("option", { value: p }, p)));
      select.addEventListener("change", () => {
        const values = spec.presets[select.value];
        if (!values) return;
        Object.entries(values).forEach(([k, v]) => setValue(k, v));
        update();
        select.value = select.value;
      });
      row.append(label, select);
      form.append(row);
    }
    spec.controls.forEach((c) => {
      const row = el("div", { class: "tc-row" });
      const inputId = `${id}-${c.name}`;
      const label = el("label", { for: inputId }, c.label + (c.unit ? ` (${c.unit})` : ""));
      let input;
      if (c.kind === "choice") {
        input = el("select", { id: inputId, name: c.name });
        c.options.forEach(([text, value]) => input.append(el("option", { value: String(value) }, text)));
        input.value = String(c.value);
      } else if (c.kind === "switch") {
        input = el("input", { id: inputId, name: c.name, type: "checkbox" });
        input.checked = c.value === 1;
      } else {
        input = el("input", { id: inputId, name: c.name, type: "number", min: c.min, max: c.max,
                              step: c.step, value: c.value, inputmode: "decimal" });
      }
      input.dataset.control = c.name;
      input.addEventListener("input", () => { syncPreset(); update(); });
      input.addEventListener("change", () => { syncPreset(); update(); });
      inputs[c.name] = input;
      row.append(label, input);
      form.append(row);
    });

    // The preset menu names the preset the inputs match, or "(custom)": at load (the defaults are
    // the page's running example, usually a preset) and after every edit.
    function syncPreset() {
      const p = form.querySelector("select[data-preset]");
      if (!p) return;
      const v = values();
      const hit = Object.entries(spec.presets).find(([, vals]) =>
        Object.entries(vals).every(([k, x]) => v[k] === Number(x)));
      p.value = hit ? hit[0] : "";
    }
    function setValue(name, v) {
      const input = inputs[name];
      if (input.type === "checkbox") input.checked = Number(v) === 1;
      else input.value = String(v);
    }
    function values() {
      const out = {};
      spec.controls.forEach((c) => {
        const input = inputs[c.name];
        let v = input.type === "checkbox" ? (input.checked ? 1 : 0) : Number(input.value);
        if (c.kind === "number") {
          if (!isFinite(v)) v = c.value;
          v = Math.min(c.max, Math.max(c.min, v));
        }
        out[c.name] = v;
      });
      return out;
    }

    const results = el("dl", { class: "tc-explorer-results", "aria-live": "polite" });
    const shown = {};
    spec.outputs.forEach((o) => {
      const dt = el("dt", {}, o.label);
      const dd = el("dd", { "data-output": o.name });
      shown[o.name] = dd;
      results.append(dt, dd);
    });
    const figure = el("div", { class: "tc-explorer-plot", role: "img",
                               "aria-label": spec.title + " (figure)" });
    const title = el("p", { class: "tc-explorer-title" }, spec.title);
    const panel = el("div", { class: "tc-explorer-panel" });
    panel.append(form, results);
    const warning = el("p", { class: "tc-explorer-warning", role: "alert" });
    warning.hidden = true;
    root.append(title, panel, warning);
    if (spec.plots.length) root.append(figure);
    if (spec.note) root.append(el("p", { class: "tc-explorer-note" }, spec.note));

    function frame(v) {
      const key = spec.frame_keys.map((k) => keyOf(v[k])).join("|");
      return spec.frames ? spec.frames[key] : undefined;
    }

    function draw(v, computed) {
      if (!spec.plots.length || typeof Plotly === "undefined") return;
      const traces = [];
      const layout = plotTheme();
      spec.plots.forEach((p) => {
        if (p.type === "stack") {
          p.outputs.forEach((name) => {
            const o = spec.outputs.find((x) => x.name === name);
            traces.push({ type: "bar", name: o.label, x: [p.xlabel || ""],
                          y: [computed[name] / (p.scale || 1)] });
          });
          layout.barmode = "stack";
          layout.yaxis.title = { text: p.ylabel || "" };
          layout.shapes = (p.lines || []).map(([y, text]) => ({
            type: "line", xref: "paper", x0: 0, x1: 1, y0: y / (p.scale || 1), y1: y / (p.scale || 1),
            line: { dash: "dot", width: 1, color: cssVar("--pst-color-text-muted", "#888") } }));
          layout.annotations = (p.lines || []).map(([y, text]) => ({
            xref: "paper", x: 1, xanchor: "right", y: y / (p.scale || 1), yanchor: "bottom",
            text: text, showarrow: false, font: { size: 11 } }));
        } else if (p.type === "frames") {
          const f = frame(v);
          if (!f) return;
          p.series.forEach((s) => {
            traces.push({ type: s.kind || "scatter", mode: s.mode || "lines", name: s.label,
                          x: f[p.x], y: f[s.y] });
          });
          layout.xaxis.title = { text: p.xlabel || "" };
          layout.yaxis.title = { text: p.ylabel || "" };
          if (p.ylog) layout.yaxis.type = "log";
          if (p.xlog) layout.xaxis.type = "log";
        } else if (p.type === "curve") {
          const f = curves[spec.plots.filter((q) => q.type === "curve").indexOf(p)];
          const xs = [], ys = [];
          for (let i = 0; i < p.points; i++) {
            const u = p.from + (p.to - p.from) * i / (p.points - 1);
            const x = p.xlog ? Math.pow(10, u) : u;
            xs.push(x);
            ys.push(Number(f(...names.map((n) => v[n]), x)));
          }
          traces.push({ type: "scatter", mode: "lines", name: p.label, x: xs, y: ys });
          if (p.mark && isFinite(computed[p.mark])) {
            const xm = computed[p.mark];
            traces.push({ type: "scatter", mode: "markers", name: p.mark_label || "optimum",
                          x: [xm], y: [Number(f(...names.map((n) => v[n]), xm))], marker: { size: 10 } });
          }
          layout.xaxis.title = { text: p.xlabel || "" };
          layout.yaxis.title = { text: p.ylabel || "" };
          if (p.xlog) layout.xaxis.type = "log";
          if (p.ylog) layout.yaxis.type = "log";
        } else if (p.type === "heatmap") {
          const f = frame(v);
          if (!f) return;
          traces.push({ type: "heatmap", z: f[p.z], x: f[p.x], y: f[p.y], colorscale: p.colorscale || "Viridis",
                        zmin: p.zmin, zmax: p.zmax });
          layout.yaxis.autorange = "reversed";
          layout.xaxis.title = { text: p.xlabel || "" };
          layout.yaxis.title = { text: p.ylabel || "" };
          layout.height = 380;
        }
      });
      Plotly.react(figure, traces, layout, { displayModeBar: false, responsive: true, staticPlot: false });
    }

    function update() {
      const v = values();
      const args = names.map((n) => v[n]);
      const computed = {};
      const f = frame(v);
      const broken = checks.filter(([check]) => !check(...args)).map(([, message]) => message);
      warning.hidden = broken.length === 0;
      warning.textContent = broken.join("; ");
      spec.outputs.forEach((o) => {
        let value = NaN;
        if (broken.length) { computed[o.name] = NaN; shown[o.name].textContent = "\u2014"; return; }
        try {
          if (o.frame !== undefined) {
            if (f) {  // the point of the frame's grid nearest the control's value
              const grid = f[o.along];
              let best = 0;
              grid.forEach((g, j) => { if (Math.abs(g - v[o.at]) < Math.abs(grid[best] - v[o.at])) best = j; });
              value = Number(f[o.frame][best]);
            }
          } else {
            value = Number(fns[o.name](...args));
          }
        } catch (e) { value = NaN; }
        computed[o.name] = value;
        shown[o.name].textContent = tcFormat(value, o.fmt, o.digits);
      });
      root.dataset.ready = "1";
      draw(v, computed);
    }
    root.tcUpdate = update;
    update();
    syncPreset();
    new MutationObserver(() => update()).observe(document.documentElement,
                                                  { attributes: true, attributeFilter: ["data-theme"] });
  }

  function init() {
    document.querySelectorAll(".tc-explorer").forEach((root) => {
      if (root.dataset.built) return;
      root.dataset.built = "1";
      try { build(root); } catch (e) { console.error("explorer", root.id, e); }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
