FROM pybuild-test/busybox:1
LABEL a=base b=base
