// Package bpfinfo reads what kfm needs to know about BPF objects that are
// already loaded (IDs, names and types, the maps a program uses) with
// BPF_OBJ_GET_INFO_BY_FD alone.
//
// cilium/ebpf's Map.Info and Program.Info, and every constructor that
// opens an object (LoadPinnedMap, NewMapFromID, ...), also read
// /proc/self/fdinfo for fields kfm does not use (memlock, frozen): an
// open, a read of a text file and its parsing per object. kfm's read paths
// (status, the planning of a no-op apply, metrics scrapes) look at every
// program and map of every chain, so at 300 chains of 5 programs those
// reads were most of their time. The functions here cost two or three
// system calls per object and open nothing else.
//
// Everything here needs the same privileges as the objects it reads
// (CAP_BPF or CAP_SYS_ADMIN), and kernels of 4.13 or later
// (BPF_OBJ_GET_INFO_BY_FD); kfm needs 5.10.
package bpfinfo
