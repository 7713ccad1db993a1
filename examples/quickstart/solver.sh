#!/bin/sh
# A stand-in solver: "integrates" dx/dt = -alpha*x for a number of steps with awk
# and writes step,x rows. Reads its starting value from input/base.cfg.
alpha=$1
steps=$2
x0=$(sed -n 's/^x0 *= *//p' input/base.cfg)
awk -v a="$alpha" -v n="$steps" -v x="$x0" 'BEGIN {
    print "step,x"; dt = 0.1
    for (i = 0; i <= n; i++) { printf "%d,%.6f\n", i, x; x = x - a * x * dt }
}'
