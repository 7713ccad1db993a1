#!/bin/sh
# A solver that saves its state when dssh asks (migrate_signal) and resumes from it.
# It counts to STEPS, one step a second; its state is the step it got to.
steps=${1:-30}
i=0
if [ -f "$DSSH_INPUT/checkpoint/state" ]; then
    read -r i < "$DSSH_INPUT/checkpoint/state"       # resume where the last attempt stopped
    cat "$DSSH_INPUT/checkpoint/history" > "$DSSH_OUTPUT/history" 2>/dev/null  # (input is read-only)
fi
echo "attempt $DSSH_ATTEMPT on $(hostname) as $(id -un): from step $i" >> "$DSSH_OUTPUT/history"
save() {
    echo "$i" > "$DSSH_OUTPUT/state"                  # everything in outputs/ goes along
    echo "attempt $DSSH_ATTEMPT saved at step $i" >> "$DSSH_OUTPUT/history"
    exit 0
}
trap save USR1 TERM
while [ "$i" -lt "$steps" ]; do
    sleep 1 & wait $!                                  # wait: the signal is handled at once
    i=$((i + 1))
done
echo "$i" > "$DSSH_OUTPUT/result.txt"
