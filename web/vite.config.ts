import { defineConfig } from "vite";

// Served by the control plane under /app/; the API, the gateway and the app share its origin.
export default defineConfig({
  base: "/app/",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
});
