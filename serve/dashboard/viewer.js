// The volume viewer: slices (wheel and slider), window/level (drag and presets), axis switch,
// MIP / MinIP with a slab, 3D with orbit drag, and overlays per segment. Every view is a PNG
// rendered by the render server; one request is in flight at a time, the newest view wins.

import { getBlob, getJson, putJson } from "./api.js";
import { el } from "./dom.js";

const WINDOW_PRESETS = ["lung", "bone", "soft_tissue", "brain"];
const TRANSFER_PRESETS = ["ct_bone", "ct_soft_tissue"];
const MODES = [["slice", "Slice"], ["mip", "MIP"], ["minip", "MinIP"], ["3d", "3D"]];
const AXES = ["axial", "coronal", "sagittal"];

export async function showViewer(main, jobId, volumeName) {
  const volumes = await getJson(`/api/v1/render/${jobId}/volumes`);
  const images = volumes.filter((v) => v.kind === "image");
  if (!images.length) {
    main.replaceChildren(el("h1", {}, "Viewer"), el("p", { class: "muted" }, `Job ${jobId} has no volume to show yet.`));
    return;
  }
  const volume = images.find((v) => v.volume === volumeName) || images[0];
  const overlays = volumes.filter((v) => v.kind === "labels" && (volume.overlays || []).includes(v.volume));
  new Viewer(main, jobId, volume, images, overlays).show();
}

class Viewer {
  constructor(main, jobId, volume, images, overlays) {
    this.main = main;
    this.jobId = jobId;
    this.volume = volume;
    this.images = images;
    this.overlays = overlays;
    const saved = volume.settings || {};
    this.view = {
      mode: saved.mode || "slice",
      axis: saved.axis || "axial",
      index: saved.index ?? Math.floor(volume.lengths[saved.axis || "axial"] / 2),
      preset: saved.preset ?? "soft_tissue",
      window: saved.window ?? null,
      level: saved.level ?? null,
      transfer: saved.transfer || "ct_bone",
      azimuth: saved.azimuth ?? 30,
      elevation: saved.elevation ?? 20,
      slab: saved.slab ?? 0,
      overlay: (overlays.find((o) => o.volume === saved.overlay) || overlays[0])?.volume ?? null,
      segments: new Set(saved.segments || (overlays[0]?.segments || []).map((s) => s.value)),
      opacity: saved.opacity ?? 0.4,
    };
    this.loading = false;
    this.again = false;
  }

  show() {
    this.image = el("img", { id: "view", alt: "rendered view", draggable: "false" });
    this.status = el("p", { class: "muted", id: "view-status" });
    this.controls = el("div", { class: "controls" });
    this.main.replaceChildren(
      el("h1", {}, "Viewer ", el("a", { href: `#/jobs/${this.jobId}` }, `job ${this.jobId.slice(0, 8)}`)),
      el("div", { class: "viewer" }, el("div", { class: "stage" }, this.image), this.controls),
      this.status,
    );
    this.bindPointer();
    this.renderControls();
    this.request();
  }

  length() {
    return this.volume.lengths[this.view.axis];
  }

  set(changes) {
    Object.assign(this.view, changes);
    const max = this.length() - 1;
    this.view.index = Math.max(0, Math.min(max, this.view.index));
    this.renderControls();
    this.request();
  }

  renderControls() {
    const v = this.view;
    const button = (label, on, onclick, id) => el("button", { class: on ? "on" : "", onclick, id }, label);
    const number = (id, value, onchange, attrs = {}) =>
      el("input", { id, type: "number", value: value ?? "", onchange: (e) => onchange(e.target.value), ...attrs });
    const parts = [
      this.images.length > 1
        ? el("label", {}, "Volume", el("select", { id: "volume", onchange: (e) => (location.hash = `#/viewer/${this.jobId}/${e.target.value}`) }, this.images.map((i) => el("option", { value: i.volume, ...(i.volume === this.volume.volume ? { selected: "" } : {}) }, i.volume))))
        : null,
      el("div", { class: "row" }, MODES.map(([mode, label]) => button(label, v.mode === mode, () => this.set({ mode }), `mode-${mode}`))),
    ];
    if (v.mode !== "3d") {
      parts.push(el("div", { class: "row" }, AXES.map((axis) => button(axis, v.axis === axis, () => this.set({ axis, index: Math.floor(this.volume.lengths[axis] / 2) }), `axis-${axis}`))));
    }
    if (v.mode === "slice") {
      parts.push(el("label", {}, `Slice ${v.index + 1} / ${this.length()}`, el("input", { id: "index", type: "range", min: 0, max: this.length() - 1, value: v.index, oninput: (e) => this.set({ index: Number(e.target.value) }) })));
    }
    if (v.mode === "mip" || v.mode === "minip") {
      parts.push(el("label", {}, "Slab (mm, 0: whole volume)", number("slab", v.slab, (x) => this.set({ slab: Math.max(0, Number(x) || 0) }), { min: 0 })));
    }
    if (v.mode === "3d") {
      parts.push(
        el("label", {}, "Transfer function", el("select", { id: "transfer", onchange: (e) => this.set({ transfer: e.target.value }) }, TRANSFER_PRESETS.map((p) => el("option", { value: p, ...(p === v.transfer ? { selected: "" } : {}) }, p)))),
        el("p", { class: "muted" }, `Drag to orbit: azimuth ${Math.round(v.azimuth)}°, elevation ${Math.round(v.elevation)}°`),
      );
    } else {
      parts.push(
        el("label", {}, "Window preset", el("select", { id: "preset", onchange: (e) => this.set({ preset: e.target.value || null, window: null, level: null }) }, [el("option", { value: "" }, "custom"), ...WINDOW_PRESETS.map((p) => el("option", { value: p, ...(p === v.preset ? { selected: "" } : {}) }, p))])),
        el("div", { class: "row" },
          el("label", {}, "Window", number("window", v.window, (x) => this.set({ window: Number(x), preset: null, level: v.level ?? 40 }), { min: 1 })),
          el("label", {}, "Level", number("level", v.level, (x) => this.set({ level: Number(x), preset: null, window: v.window ?? 400 })))),
        el("p", { class: "muted" }, "Drag on the image: left/right window, up/down level."),
      );
    }
    const overlay = this.overlays.find((o) => o.volume === v.overlay);
    if (overlay) {
      const choose = (e) => {
        const chosen = this.overlays.find((o) => o.volume === e.target.value);
        this.set({ overlay: chosen.volume, segments: new Set(chosen.segments.map((seg) => seg.value)) });
      };
      parts.push(
        el("div", {},
          this.overlays.length > 1
            ? el("label", {}, "Overlay", el("select", { id: "overlay", onchange: choose }, this.overlays.map((o) => el("option", { value: o.volume, ...(o.volume === v.overlay ? { selected: "" } : {}) }, o.volume))))
            : el("strong", {}, `Overlay: ${overlay.volume}`),
          overlay.segments.map((s) =>
            el("label", { class: "row" },
              el("input", { type: "checkbox", "data-segment": s.value, ...(v.segments.has(s.value) ? { checked: "" } : {}), onchange: (e) => { e.target.checked ? v.segments.add(s.value) : v.segments.delete(s.value); this.set({}); } }),
              el("span", { class: "swatch", style: `background: rgb(${s.color.join(",")})` }),
              s.name))),
        el("label", {}, "Opacity", el("input", { id: "opacity", type: "range", min: 0, max: 1, step: 0.05, value: v.opacity, onchange: (e) => this.set({ opacity: Number(e.target.value) }) })),
      );
    }
    parts.push(el("button", { id: "save-view", onclick: () => this.save() }, "Save view"));
    this.controls.replaceChildren(...parts.filter(Boolean));
  }

  url() {
    const v = this.view;
    const params = new URLSearchParams({ size: "512" });
    if (v.mode === "3d") {
      params.set("preset", v.transfer);
      params.set("azimuth", String(Math.round(v.azimuth)));
      params.set("elevation", String(Math.round(v.elevation)));
    } else {
      params.set("axis", v.axis);
      if (v.mode === "slice") params.set("index", String(v.index));
      if (v.mode !== "slice" && v.slab > 0) params.set("slab", String(v.slab));
      if (v.preset) params.set("preset", v.preset);
      else {
        params.set("window", String(Math.round(v.window)));
        params.set("level", String(Math.round(v.level)));
      }
      if (v.overlay && v.segments.size) {
        params.set("overlay", v.overlay);
        params.set("segments", [...v.segments].sort((a, b) => a - b).join(","));
        params.set("opacity", String(v.opacity));
      }
    }
    return `/api/v1/render/${this.jobId}/${this.volume.volume}/${v.mode}.png?${params}`;
  }

  // One request at a time; a change made meanwhile is rendered when it ends.
  async request() {
    if (this.loading) {
      this.again = true;
      return;
    }
    this.loading = true;
    this.image.dataset.pending = "true";
    const url = this.url();
    try {
      const blob = await getBlob(url);
      const previous = this.image.src;
      await new Promise((resolve, reject) => {
        this.image.onload = resolve;
        this.image.onerror = reject;
        this.image.src = URL.createObjectURL(blob);
      });
      if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
      this.image.dataset.view = url;
      this.status.textContent = "";
    } catch (error) {
      this.status.textContent = String(error.message || error);
      this.status.className = "error";
    } finally {
      this.loading = false;
      if (this.again) {
        this.again = false;
        this.request();
      } else {
        delete this.image.dataset.pending;
      }
    }
  }

  bindPointer() {
    let drag = null;
    this.image.addEventListener("pointerdown", (e) => {
      const v = this.view;
      drag = { x: e.clientX, y: e.clientY, window: v.window ?? 400, level: v.level ?? 40, azimuth: v.azimuth, elevation: v.elevation };
      this.image.setPointerCapture(e.pointerId);
    });
    this.image.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (this.view.mode === "3d") {
        this.set({ azimuth: (drag.azimuth + dx * 0.5 + 360) % 360, elevation: Math.max(-89, Math.min(89, drag.elevation - dy * 0.5)) });
      } else {
        this.set({ preset: null, window: Math.max(1, drag.window + dx * 4), level: drag.level + dy * 2 });
      }
    });
    const end = () => (drag = null);
    this.image.addEventListener("pointerup", end);
    this.image.addEventListener("pointercancel", end);
    this.image.addEventListener("wheel", (e) => {
      if (this.view.mode !== "slice") return;
      e.preventDefault();
      this.set({ index: this.view.index + (e.deltaY > 0 ? 1 : -1) });
    }, { passive: false });
  }

  async save() {
    const settings = { ...this.view, segments: [...this.view.segments] };
    try {
      await putJson(`/api/v1/render/${this.jobId}/${this.volume.volume}/settings`, settings);
      this.status.className = "muted";
      this.status.textContent = "View saved.";
    } catch (error) {
      this.status.className = "error";
      this.status.textContent = `Not saved: ${error.message}`;
    }
  }
}
