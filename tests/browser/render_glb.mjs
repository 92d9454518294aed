// Loads a GLB with three.js's GLTFLoader in headless Chromium and renders it (tests/test_threejs.py).
//
// node render_glb.mjs <file.glb> <artifacts folder>
//
// The page, three and the GLB are served from memory and node_modules through page.route (no
// server, no network). The scene is lit as three.js's own glTF examples light it
// (RoomEnvironment through PMREM, so MeshPhysicalMaterial's specular and IOR have something to
// reflect), plus one directional key light, with an sRGB output and neutral tone mapping. The
// camera frames the model's bounding box and renders on a transparent background (alpha = 0
// where nothing was drawn):
//   front.png          the model from +z (glTF's front), all morph weights 0;
//   profile.png        the same at 90 degrees of yaw (camera on +x: the model's left side);
//   front_jawOpen.png  front, with morphTargetInfluences[jawOpen] = 1 on every primitive;
//   profile_jawOpen.png
// Prints one JSON line: each mesh (three.js makes one Mesh per glTF primitive) with its
// material's name, type and the KHR_materials_specular / _ior values as three.js read them, its
// morphTargetDictionary's names in index order, vertex count; the camera and the page's console
// errors and warnings. Exits 1 on any failure.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [glbPath, artifacts] = process.argv.slice(2);
if (!artifacts) {
  console.error("usage: node render_glb.mjs <file.glb> <artifacts folder>");
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const SIZE = 512;
const ORIGIN = "http://render.test";
const THREE_DIR = join(dirname(fileURLToPath(import.meta.url)), "node_modules", "three");

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8">
<script type="importmap">
{"imports": {"three": "/three/build/three.module.js", "three/addons/": "/three/examples/jsm/"}}
</script></head>
<body style="margin:0">
<script type="module">
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { RoomEnvironment } from "three/addons/environments/RoomEnvironment.js";

const SIZE = ${SIZE};
const renderer = new THREE.WebGLRenderer({ antialias: true, alpha: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(1);
renderer.setSize(SIZE, SIZE);
renderer.setClearColor(0x000000, 0);
renderer.outputColorSpace = THREE.SRGBColorSpace;
renderer.toneMapping = THREE.NeutralToneMapping;
document.body.appendChild(renderer.domElement);

const scene = new THREE.Scene();
const pmrem = new THREE.PMREMGenerator(renderer);
scene.environment = pmrem.fromScene(new RoomEnvironment(), 0.04).texture;
const key = new THREE.DirectionalLight(0xffffff, 1.5);
scene.add(key);

window.renderGlb = async () => {
  const gltf = await new GLTFLoader().loadAsync("/model.glb");
  scene.add(gltf.scene);
  const meshes = [];
  gltf.scene.traverse((o) => { if (o.isMesh) meshes.push(o); });

  gltf.scene.updateMatrixWorld(true);
  // the neutral shape's box (setFromObject would add every morph target's extent)
  const box = new THREE.Box3();
  for (const m of meshes) {
    box.union(new THREE.Box3().setFromBufferAttribute(m.geometry.attributes.position)
      .applyMatrix4(m.matrixWorld));
  }
  const center = box.getCenter(new THREE.Vector3());
  const size = box.getSize(new THREE.Vector3());
  const radius = 0.5 * Math.max(size.x, size.y, size.z);
  const camera = new THREE.PerspectiveCamera(30, 1, radius / 100, radius * 100);
  // the largest side fills ~85% of the frame, seen from any side
  const distance = radius / 0.85 / Math.tan(THREE.MathUtils.degToRad(15));

  const views = {};
  const view = (name, yawDeg) => {
    const yaw = THREE.MathUtils.degToRad(yawDeg);
    const dir = new THREE.Vector3(Math.sin(yaw), 0, Math.cos(yaw));
    camera.position.copy(center).addScaledVector(dir, distance);
    camera.lookAt(center);
    // key light above and to the camera's right
    key.position.copy(camera.position).add(new THREE.Vector3(0, radius, 0)).addScaledVector(
      new THREE.Vector3().crossVectors(dir, new THREE.Vector3(0, 1, 0)).negate(), radius);
    key.target.position.copy(center);
    key.target.updateMatrixWorld();
    renderer.render(scene, camera);
    views[name] = renderer.domElement.toDataURL("image/png");
  };
  const setJaw = (weight) => {
    for (const m of meshes) {
      const i = m.morphTargetDictionary?.jawOpen;
      if (i !== undefined) m.morphTargetInfluences[i] = weight;
    }
  };
  view("front", 0);
  view("profile", 90);
  setJaw(1);
  view("front_jawOpen", 0);
  view("profile_jawOpen", 90);
  setJaw(0);

  const color = (c) => (c ? [c.r, c.g, c.b] : null);
  const info = meshes.map((m) => {
    const mat = m.material;
    const dict = m.morphTargetDictionary || {};
    return {
      name: m.name,
      vertices: m.geometry.attributes.position.count,
      attributes: Object.keys(m.geometry.attributes).sort(),
      morph_position_count: (m.geometry.morphAttributes.position || []).length,
      morph_normal_count: (m.geometry.morphAttributes.normal || []).length,
      morph_targets: Object.keys(dict).sort((a, b) => dict[a] - dict[b]),
      material: {
        name: mat.name,
        type: mat.type,
        side: mat.side,
        map: !!mat.map,
        normalMap: !!mat.normalMap,
        roughnessMap: !!mat.roughnessMap,
        metalnessMap: !!mat.metalnessMap,
        aoMap: !!mat.aoMap,
        roughness: mat.roughness,
        metalness: mat.metalness,
        specularIntensity: mat.specularIntensity ?? null,
        specularIntensityMap: !!mat.specularIntensityMap,
        specularColor: color(mat.specularColor),
        specularColorMap: !!mat.specularColorMap,
        ior: mat.ior ?? null,
      },
    };
  });
  return {
    meshes: info,
    extensions_used: gltf.parser.json.extensionsUsed || [],
    box: { min: box.min.toArray(), max: box.max.toArray() },
    camera: { fov_deg: 30, distance, center: center.toArray() },
    three_revision: THREE.REVISION,
    views,
  };
};
window.pageReady = true;
</script></body></html>`;

const CONTENT_TYPES = { ".js": "text/javascript", ".json": "application/json" };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--use-angle=swiftshader", // software WebGL: the same pixels with or without a GPU
    "--enable-unsafe-swiftshader",
  ],
});
const messages = [];
const result = {};
try {
  const page = await browser.newPage({ viewport: { width: SIZE, height: SIZE } });
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") messages.push(`${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => messages.push(`pageerror: ${e}`));
  await page.route(`${ORIGIN}/**`, async (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === "/" || path === "/index.html") {
      return route.fulfill({ body: PAGE, contentType: "text/html" });
    }
    if (path === "/model.glb") {
      return route.fulfill({ body: readFileSync(glbPath), contentType: "model/gltf-binary" });
    }
    const file = normalize(join(THREE_DIR, path.slice("/three/".length)));
    if (path.startsWith("/three/") && file.startsWith(THREE_DIR)) {
      const type = CONTENT_TYPES[extname(file)] || "application/octet-stream";
      return route.fulfill({ body: readFileSync(file), contentType: type });
    }
    return route.fulfill({ status: 404, body: "not found" });
  });
  await page.goto(`${ORIGIN}/index.html`);
  await page.waitForFunction(() => window.pageReady === true, null, { timeout: 30_000 });
  const start = Date.now();
  const rendered = await page.evaluate(() => window.renderGlb());
  result.render_s = Math.round((Date.now() - start) / 100) / 10;
  for (const [name, url] of Object.entries(rendered.views)) {
    const png = Buffer.from(url.slice(url.indexOf(",") + 1), "base64");
    writeFileSync(join(artifacts, `${name}.png`), png);
  }
  result.images = Object.keys(rendered.views).map((name) => `${name}.png`);
  delete rendered.views;
  Object.assign(result, rendered);
  result.renderer = await page.evaluate(() => {
    const gl = document.createElement("canvas").getContext("webgl2");
    const ext = gl && gl.getExtension("WEBGL_debug_renderer_info");
    return ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : null;
  });
  result.ok = true;
} catch (err) {
  result.ok = false;
  result.failure = String(err);
} finally {
  result.console = messages;
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
