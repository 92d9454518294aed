// Drives the running Gradio demo in headless Chromium, as a user would (tests/test_browser.py).
//
// node drive_demo.mjs <url> <face photo> <non-face image> <non-image file> <artifacts folder>
//
// 1. screenshot the empty app (before.png);
// 2. upload the face photo, open Settings, pick 512 px maps and 2 fitting steps, click
//    Reconstruct, wait for the 3D viewer's canvas, the map and relit galleries and the downloads,
//    wait for the viewer to draw the face (viewer.png: the canvas alone), screenshot (after.png);
// 3. replace the photo with the non-face image, click Reconstruct, wait for "No face found" in
//    the page, screenshot (error.png);
// 4. replace it with a file that is not an image, click Reconstruct, wait for the loader's
//    message ("<name> is not an image ..."), screenshot (bad_upload.png).
// Prints one JSON line with what it saw and how long each step took; exits 1 on any failure
// (with failure.png saved).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, facePhoto, nonFace, notAnImage, artifacts] = process.argv.slice(2);
if (!artifacts) {
  console.error(
    "usage: node drive_demo.mjs <url> <face photo> <non-face image> <non-image file> <artifacts>",
  );
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const RESULT_TIMEOUT_MS = 100_000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  headless: true,
  // Playwright gives the browser a fresh, temporary --user-data-dir of its own.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--enable-unsafe-swiftshader", // software WebGL for the 3D viewer without a GPU
  ],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
const consoleErrors = [];
page.on("console", (message) => {
  if (message.type() === "error") consoleErrors.push(message.text());
});
const result = { timings_s: {} };
const seconds = (start) => Math.round((Date.now() - start) / 100) / 10;

async function uploadPhoto(path, state = "visible") {
  await page.locator("#photo input[type=file]").setInputFiles(path);
  await page.locator("#photo img").first().waitFor({ state, timeout: 20_000 });
}

// Click Reconstruct, wait for a message matching `pattern` and screenshot it: [text, seconds].
async function reconstructForMessage(pattern, screenshot) {
  const start = Date.now();
  await page.locator("#reconstruct").click();
  const message = page.getByText(pattern).first();
  await message.waitFor({ state: "visible", timeout: 60_000 });
  const elapsed = seconds(start);
  const text = (await message.innerText()).trim();
  // the message is a toast, fixed to the viewport's top: screenshot the viewport
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(500);
  await page.screenshot({ path: join(artifacts, screenshot) });
  return [text, elapsed];
}

try {
  let start = Date.now();
  await page.goto(url, { waitUntil: "domcontentloaded" });
  await page.locator("#reconstruct").waitFor({ state: "visible", timeout: 30_000 });
  // not "networkidle": the page keeps a heartbeat stream open (the app's unload event)
  await page.waitForLoadState("load");
  await page.locator("#photo input[type=file]").waitFor({ state: "attached", timeout: 30_000 });
  result.timings_s.page_load = seconds(start);
  await page.screenshot({ path: join(artifacts, "before.png"), fullPage: true });

  // A reconstruction, with small maps and few fitting steps to stay quick.
  await uploadPhoto(facePhoto);
  await page.locator("#settings").getByText("Settings", { exact: true }).click();
  await page.locator("#resolution").getByText("512", { exact: true }).click();
  const steps = page.locator("#fit-steps input[type=number]");
  await steps.fill("2");
  await steps.press("Enter");
  start = Date.now();
  await page.locator("#reconstruct").click();
  await page.locator("#model3d canvas").waitFor({ state: "visible", timeout: RESULT_TIMEOUT_MS });
  await page.waitForFunction(
    () =>
      // file names are split into stem and extension elements: read the text as rendered
      document.querySelector("#downloads")?.innerText.replace(/\s/g, "").includes("maps.zip") &&
      document.querySelectorAll("#maps img").length >= 5 &&
      document.querySelectorAll("#relit img").length >= 8 &&
      [...document.querySelectorAll("#maps img, #relit img, #render img")].every(
        (img) => img.complete && img.naturalWidth > 0,
      ),
    null,
    { timeout: RESULT_TIMEOUT_MS },
  );
  result.timings_s.reconstruct = seconds(start);
  result.map_images = await page.locator("#maps img").count();
  result.relit_images = await page.locator("#relit img").count();
  result.summary = (await page.locator("#summary").innerText()).trim();
  result.warnings = (await page.locator("#warnings").innerText()).trim();
  result.downloads = await page.locator("#downloads").innerText();
  const canvas = page.locator("#model3d canvas");
  const box = await canvas.boundingBox();
  result.viewer_canvas = box ? [Math.round(box.width), Math.round(box.height)] : null;
  // The viewer loads the GLB and draws it a moment after the canvas appears: wait until the
  // canvas no longer looks empty (an empty canvas compresses to a few KB of PNG); the test
  // then checks viewer.png's pixels.
  const viewerStart = Date.now();
  let viewer = await canvas.screenshot();
  while (viewer.length < 20_000 && Date.now() - viewerStart < 30_000) {
    await page.waitForTimeout(500);
    viewer = await canvas.screenshot();
  }
  writeFileSync(join(artifacts, "viewer.png"), viewer);
  result.timings_s.viewer_drawn = seconds(viewerStart);
  await page.screenshot({ path: join(artifacts, "after.png"), fullPage: true });

  // A photo without a face: the error must be shown in the page.
  await page.locator("#photo").getByRole("button", { name: "Remove Image" }).click();
  await uploadPhoto(nonFace);
  [result.error_text, result.timings_s.error] = await reconstructForMessage(
    /No face found/,
    "error.png",
  );

  // A file that is not an image (the browser cannot draw it): the loader's own message.
  await page.locator("#photo").getByRole("button", { name: "Remove Image" }).click();
  await uploadPhoto(notAnImage, "attached");
  [result.bad_upload_text, result.timings_s.bad_upload] = await reconstructForMessage(
    /is not an image/,
    "bad_upload.png",
  );
  result.console_errors = consoleErrors;
  result.ok = true;
} catch (err) {
  result.ok = false;
  result.failure = String(err);
  result.console_errors = consoleErrors;
  await page.screenshot({ path: join(artifacts, "failure.png"), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
