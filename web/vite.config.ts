import { defineConfig } from "vite";

// Served by the control plane under /app/; the API, the gateway and the app share its origin.
export default defineConfig({
  base: "/app/",
  // hls.js (~580 kB) is its own chunk, loaded only when the watch page plays.
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 700 },
});
