#ifndef CCLUSTERWIRE_H
#define CCLUSTERWIRE_H

#include "llama_cluster.pb-c.h"
#include "cluster_wire_support.h"

#endif
