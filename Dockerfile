# svid-exec container image: the binary alone, on distroless, as user 65532.
#
# build context: .
# base images: rust:1.95.0-slim-bookworm gcr.io/distroless/cc-debian12:nonroot
# (.ci/check-dockerfiles checks both lines: every COPY source exists in the
# context, and every image pulled is built by README.md or declared above.)
#
# Build:  docker build -t svid-exec:0.1.0 .
# Use as the entrypoint of this image, or copy the binary into your own image:
#   COPY --from=svid-exec:0.1.0 /svid-exec /usr/local/bin/svid-exec
# The binary links only against glibc and libgcc_s (README.md, "Install"), so it
# runs in any glibc-based image (Debian, Ubuntu, distroless/cc, UBI). It carries
# its own CA roots (webpki-roots), so images without a CA bundle still reach
# Infisical Cloud.

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY tests/testkit/Cargo.toml tests/testkit/Cargo.toml
RUN mkdir -p src tests/testkit/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs tests/testkit/src/lib.rs \
 && cargo fetch --locked
COPY . .
RUN cargo build --release --locked --bin svid-exec \
 && install -m 0755 target/release/svid-exec /svid-exec

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /svid-exec /svid-exec
USER 65532:65532
ENTRYPOINT ["/svid-exec"]
