/** @type {import("next").NextConfig} */
const nextConfig = {
  // The example lives inside the wabus repository; pin the workspace root to this folder so
  // Next.js does not go looking for lockfiles above it.
  turbopack: { root: import.meta.dirname },
  outputFileTracingRoot: import.meta.dirname,
};

export default nextConfig;
