"""The method: AM-SupCon with its margin and class-aware attention, balanced with AAM-softmax."""
