import { defineConfig } from "vite";

// Served by the `console` component under /console/ (functions/console). Asset names
// carry a content hash, which the component caches for a year; index.html is never
// cached. No inline scripts or styles: the component's Content-Security-Policy
// forbids them.
export default defineConfig({
  base: "/console/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    target: "es2022",
    sourcemap: false,
    reportCompressedSize: false,
  },
});
