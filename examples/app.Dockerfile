# An application image with tmpvault's binary copied in, for `tmpvault run`
# (k8s/deployment.yaml's app container, compose.run.yaml's app service).
# tmpvault's own image is scratch with /tmpvault and no shell, so the binary
# goes to the app rather than the app to it: one COPY in the app's own
# Dockerfile. The base here is the example app's (curl's image, for its
# shell); yours replaces it.
#
#   docker build -t tmpvault .                      (or the offline target)
#   docker build -f examples/app.Dockerfile -t tmpvault-example-app .
#
# The build context is not used (.dockerignore sends next to nothing).
ARG TMPVAULT_IMAGE=tmpvault:latest
FROM ${TMPVAULT_IMAGE} AS tmpvault

FROM docker.io/curlimages/curl:8.11.1
COPY --from=tmpvault /tmpvault /usr/local/bin/tmpvault
USER 65532:65532
# The app's own check, if it has one; tmpvault run needs none.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/tmpvault", "run"]
