# Sourced by the benchmark scripts: CPU of a process's threads by name.
# thread_ticks PID PATTERN: user + kernel ticks of the threads of PID whose
# name (/proc/PID/task/TID/comm, 15 characters at most) matches PATTERN.
thread_ticks() {
  local total=0 name fields
  for task in /proc/"$1"/task/*; do
    name=$(cat "$task/comm" 2>/dev/null) || continue
    [[ $name =~ $2 ]] || continue
    fields=$(sed 's/^.*) //' "$task/stat" 2>/dev/null) || continue
    read -r -a stat <<<"$fields"
    total=$((total + stat[11] + stat[12]))
  done
  echo "$total"
}
