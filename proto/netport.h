#ifndef CITYOPS_NETPORT_H
#define CITYOPS_NETPORT_H

/* Loopback ports for the local clusters that tests, drills and benchmarks
 * start. They come from below the kernel's ephemeral range (from 10000 up
 * to ip_local_port_range's low end), so that a port found free cannot be
 * taken meanwhile as the local end of an outgoing connection; each one is
 * handed out once per process and is bindable on 127.0.0.1 when returned.
 * Returns 0, or -1 when fewer than n such ports are free. */
int netport_free(int *ports, int n);

#endif
