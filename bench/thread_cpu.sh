# Sourced by the benchmark scripts: CPU of a process's threads by name.
# thread_ticks PID PATTERN: user + kernel ticks of the threads of PID whose
# name (/proc/PID/task/TID/comm, 15 characters at most) matches PATTERN.
thread_ticks() {
  local user kernel
  read -r user kernel < <(thread_ticks_split "$@")
  echo $((user + kernel))
}

# thread_ticks_split PID PATTERN: the same, as "user kernel".
thread_ticks_split() {
  local user=0 kernel=0 name fields
  for task in /proc/"$1"/task/*; do
    name=$(cat "$task/comm" 2>/dev/null) || continue
    [[ $name =~ $2 ]] || continue
    fields=$(sed 's/^.*) //' "$task/stat" 2>/dev/null) || continue
    read -r -a stat <<<"$fields"
    user=$((user + stat[11]))
    kernel=$((kernel + stat[12]))
  done
  echo "$user $kernel"
}
