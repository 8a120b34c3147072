FROM pybuild-test/busybox:1
ONBUILD ENV triggered=yes
ONBUILD RUN echo onbuild > /onbuild
ONBUILD LABEL from_trigger=1
ENV own=1
