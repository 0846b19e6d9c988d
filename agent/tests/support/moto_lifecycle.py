"""moto_server plus the part of EC2 Auto Scaling's termination lifecycle hooks
that moto 5 lacks.

moto stores lifecycle hooks (PutLifecycleHook, DescribeLifecycleHooks) but
terminates an instance at once. AWS documents the state machine
(docs.aws.amazon.com/autoscaling/ec2/userguide/lifecycle-hooks-overview.html):
with an EC2_INSTANCE_TERMINATING hook, a terminating instance goes
Terminating -> Terminating:Wait, stays listed there until
CompleteLifecycleAction (or the hook's timeout), then Terminating:Proceed ->
Terminated. This wrapper adds exactly that, for the tier-1 lifecycle test:

- TerminateInstanceInAutoScalingGroup on an instance of a group with a
  terminating hook sets its LifecycleState to Terminating:Wait and leaves it
  in the group (so no replacement is launched yet, as on AWS);
- CompleteLifecycleAction (by InstanceId) then detaches and terminates it
  with moto's own code, which launches the replacement;
- RecordLifecycleActionHeartbeat is accepted.

The hook's heartbeat timeout is not modelled: the test completes every
action. Everything else is moto as shipped. Run with moto's venv python:
    python moto_lifecycle.py -H 0.0.0.0 -p 5000
"""

import sys

from moto.autoscaling import models, responses
from moto.core.responses import EmptyResult
from moto.server import main

TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"

# instance id -> ShouldDecrementDesiredCapacity of its termination
_waiting = {}

_moto_terminate = models.AutoScalingBackend.terminate_instance


def _state_of(backend, instance_id):
    for group in backend.autoscaling_groups.values():
        for state in group.instance_states:
            if state.instance.id == instance_id:
                return group, state
    raise KeyError(instance_id)


def terminate_instance(self, instance_id, should_decrement):
    group, state = _state_of(self, instance_id)
    hooks = [
        h
        for h in self.lifecycle_hooks.values()
        if h.auto_scaling_group_name == group.name and h.lifecycle_transition == TERMINATING
    ]
    if not hooks:
        return _moto_terminate(self, instance_id, should_decrement)
    state.lifecycle_state = "Terminating:Wait"
    _waiting[instance_id] = should_decrement
    return models.TerminateInstanceActivity(state.instance, group.desired_capacity)


def complete_lifecycle_action(self, instance_id):
    if instance_id not in _waiting:
        raise models.ValidationError(
            f"No active Lifecycle Action found with instance ID {instance_id}"
        )
    should_decrement = _waiting.pop(instance_id)
    _, state = _state_of(self, instance_id)
    state.lifecycle_state = "Terminating:Proceed"
    _moto_terminate(self, instance_id, should_decrement)


def complete_lifecycle_action_response(self):
    self.autoscaling_backend.complete_lifecycle_action(self._get_param("InstanceId"))
    return EmptyResult()


def record_lifecycle_action_heartbeat_response(self):
    return EmptyResult()


models.AutoScalingBackend.terminate_instance = terminate_instance
models.AutoScalingBackend.complete_lifecycle_action = complete_lifecycle_action
responses.AutoScalingResponse.complete_lifecycle_action = complete_lifecycle_action_response
responses.AutoScalingResponse.record_lifecycle_action_heartbeat = (
    record_lifecycle_action_heartbeat_response
)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
