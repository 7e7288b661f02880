# svid-exec container image.
#
# Build:  docker build -t svid-exec .
# Use as the entrypoint of this image, or copy the binary into your own image:
#   COPY --from=svid-exec /svid-exec /usr/local/bin/svid-exec
# The binary links only against glibc (see README, "Container image"), so it runs
# in any glibc-based image (Debian, Ubuntu, distroless/cc, UBI). It carries its
# own CA roots (webpki-roots), so images without a CA bundle still reach
# Infisical Cloud.

FROM rust:1.88-slim-bookworm AS build
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
