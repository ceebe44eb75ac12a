import { defineConfig } from "vite";

// Served by the control plane: the app under /app/, the station page and the embeddable player
// (station.html) at /stations/{slug} and /embed/{slug}, their assets under /app/assets/. The API,
// the gateway and the pages share its origin.
export default defineConfig({
  base: "/app/",
  // hls.js (~580 kB) is its own chunk, loaded only when the watch page or an HLS station plays.
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 700,
    rolldownOptions: { input: { app: "index.html", station: "station.html" } },
  },
});
